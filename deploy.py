"""First deploy and every redeploy: `pyinfra inventory.py deploy.py`. Run it again with nothing changed and
nothing changes. Settings: group_data/all.py; secrets: .env (see .env.production.example)."""

from vpskit import steps

settings = steps.plan()  # validated here, before any change is made
steps.config_kept(settings)  # refuses a .env that would silently drop a variable the server has
steps.database_password_kept(settings)  # refuses a POSTGRES_PASSWORD the database on the server does not accept
steps.database_major_kept(settings)  # refuses a postgres_image of another major than the data on the server
steps.memory_budget(settings)  # refuses limits that cannot fit the server's memory and swap during a release

steps.log_plan(settings)
steps.server_baseline(settings)  # swap, security updates, a bounded journal, SSH keys only (each a setting)
steps.firewall(settings)  # only when firewall = True
steps.docker_engine(settings)
steps.database_firewall(settings)  # a db server: postgres reachable from the app servers only
steps.offsite_tools(settings)  # restic, ssh, rclone: only when backup_offsite or media_bucket ask for them
steps.proxy_step(settings)  # the server's one proxy; a port taken on the server stops the deploy here
pushed = steps.artifacts(settings)
steps.images_on_server(settings)
steps.stack(settings)  # backup first when the app changes; rolls back when the new version is not ready
steps.timers(settings, pushed)  # backup, restore drill, health check
steps.jobs_worker(settings)  # Payload's jobs queue: one worker, on one server, when the app has jobs
