# Every vpskit default, one line each. Override per group (group_data/production.py, staging.py), per host
# in inventory.py, or per run with `--data key=value`. vpskit/settings.py validates each key.
# Secrets never go here: they come from the operator's .env (see .env.production.example).

# --- App
app_name = "example"  # names the compose project, the image and the folder on the server
app_path = "example"  # local path of the Next.js + Payload app to deploy, relative to this kit
app_version = ""  # image tag; empty = git revision of app_path, plus a content hash when it has local changes
app_port = 3000  # port the app listens on inside its container
package_manager = ""  # "npm", "pnpm" or "yarn"; empty = the one whose lock file the app has

# --- Server
app_root = "/opt"  # the app's files live in {app_root}/{app_name} on the server
firewall = False  # ufw allowing only SSH (the port in use), 80 and 443; SSH is allowed before ufw is enabled
docker_source = "distro"  # where Docker comes from: "distro" (Debian/Ubuntu packages) or "docker" (Docker's apt repo)
swap_size = "auto"  # swap file made once (/swapfile) on a server without swap: auto = 1g up to 2 GB RAM; 0 = none
swappiness = 10  # vm.swappiness with vpskit's swap file: low, so swap holds what is idle rather than what serves
unattended_upgrades = True  # the distribution's unattended-upgrades installs security updates daily
auto_reboot = False  # let unattended-upgrades reboot the server when an update needs it (at auto_reboot_time)
auto_reboot_time = "04:30"  # when such a reboot may happen (server time, HH:MM)
journal_max_use = "200M"  # journald's disk cap (SystemMaxUse); Docker's container logs are capped by log_max_*
ssh_keys_only = True  # SSH password login off, once this deploy logged in with a key; False = sshd left as it is

# --- Publishing
publish_host = "127.0.0.1"  # address the proxy serves the app on (HTTP); "0.0.0.0" exposes it (Docker bypasses ufw)
publish_port = 3000  # port the proxy serves the app on; 0 = none (served on `domain`, or through proxy_network only)
domain = ""  # public domain: the proxy serves it on 80/443 with an ACME certificate (or the Traefik rule)
proxy_network = ""  # external Docker network of your own reverse proxy (Traefik or Nginx) for the app to join
proxy_image = "caddy:2"  # image of the bundled proxy: one per server, shared by every app, owns the published ports
acme_email = ""  # contact address given to the ACME server for certificates (recommended with `domain`)
acme_ca = ""  # ACME directory URL; empty = Let's Encrypt (a test server such as pebble for trials)
acme_ca_root = ""  # path on the server of the ACME server's root certificate, for a private ACME server only
public_url = ""  # URL printed when the deploy ends; empty = derived from domain / publish_host / publish_port
traefik_labels = False  # add Traefik router labels for `domain` (needs proxy_network and domain)
max_body_size = "auto"  # largest request the proxy passes (413 above): auto = the app's upload limit + 1m, else 50m

# --- Images
node_image = ""  # base image the app builds and runs on; "" = node:<major>-bookworm-slim, the Node the app asks for
postgres_image = "postgres:17"  # database image
build_on = "local"  # "local": build on this machine and ship over SSH; "server": build on the VPS (needs >2 GB RAM)
build_database = "auto"  # throwaway PostgreSQL beside `next build`: "auto" (when pages read Payload), "always", "never"
image_transport = "registry"  # how the database image reaches the server: "registry" (docker pull) or "ssh" (shipped)
keep_images = 3  # releases kept for rollback on the server (a version with its settings), versions kept here
ship_with = "layers"  # how images built here reach the server: "layers" (only the ones it lacks) or "stream" (whole)
registry_image = "registry:2"  # image of the registry on this machine (127.0.0.1 only) servers pull layers from
registry_port = 5055  # its port on 127.0.0.1 of this machine; servers reach it through the SSH connection
build_cache = ""  # BuildKit cache for builds here, e.g. "type=gha,scope=vpskit" on GitHub Actions; "" = local

# --- Database
postgres_user = "payload"  # database role the app connects as
postgres_db = "payload"  # database name

# --- Resources
app_memory_limit = "448m"  # memory limit of the app container (Docker format: 448m, 1g); two run during a release
app_cpu_limit = "1.0"  # CPU limit of the app container, in CPUs
db_memory_limit = "256m"  # memory limit of the database container (with the app's and the proxy's: fits 1 GB)
db_cpu_limit = "1.0"  # CPU limit of the database container, in CPUs
db_stop_grace_period = "60s"  # time postgres gets to shut down cleanly before it is killed

# --- Backups
backup_root = "/var/backups"  # backups live in {backup_root}/{app_name}/<timestamp>/ on the server
backup_keep_daily = 7  # newest backup of each of the last N days kept
backup_keep_weekly = 4  # newest backup of each of the last N ISO weeks kept
backup_keep_monthly = 6  # newest backup of each of the last N months kept
backup_schedule = "*-*-* 03:15:00"  # systemd OnCalendar of the daily backup timer; empty = no timer
backup_before_update = True  # take a backup before a deploy changes a running app

# --- Offsite backups and alerts (secrets in .env: RESTIC_PASSWORD, OFFSITE_* keys, NOTIFY_URL)
backup_offsite = ""  # restic repository for offsite copies: sftp:user@host:/path, s3:https://host/bucket; "" = none
offsite_max_age = "2d"  # tasks/health.py (and its timer) fail when the last offsite copy is older than this
drill_schedule = "Sun *-*-* 04:45:00"  # OnCalendar of the restore drill (latest backup into a scratch db); "" = none
health_schedule = "hourly"  # OnCalendar of the scheduled health check (alerts NOTIFY_URL when it fails); "" = none
notify_releases = False  # also send NOTIFY_URL one message per release with its result

# --- Media (uploads; bucket keys in .env: S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY)
media_bucket = ""  # S3-compatible bucket for uploads, needed with several app servers; "" = the app server's disk
media_endpoint = ""  # the bucket's S3 endpoint URL (MinIO, R2, Hetzner, ...); "" = AWS S3 itself
media_region = "us-east-1"  # the bucket's region (most S3-compatible stores accept any)

# --- Several servers (the inventory sets these from VPSKIT_APP_HOSTS and VPSKIT_DB_HOST; see inventory.py)
role = "all"  # what this host runs: "all" (app, database, proxy), "app" (app and proxy), "db" (the database only)
private_address = ""  # this host's address on the private network its peers use; "" = its SSH address
database_host = ""  # role "app": private address of the db server, or "external" (DATABASE_URL in .env)
database_clients = ""  # role "db": the app servers' private addresses (comma-separated), the only ones let in
rollout_batch = 1  # app servers released at once in a rolling release; the others keep serving meanwhile

# --- Running Payload on several instances: jobs queue (tasks, workflows, scheduled publishing), page cache
jobs_worker = "auto"  # "auto": one worker runs the app's jobs when it has any (none in its app containers); "off"
jobs_interval = 10  # seconds between the worker's requests to run the due jobs and schedules
# "shared": a page or tag revalidated on one instance is stale on every instance within ~1 s (tags in PostgreSQL)
page_cache = "shared"  # "local": Next.js's own per-container cache only

# --- Logs
log_max_size = "10m"  # json-file log size before rotation
log_max_file = 3  # rotated json-file logs kept per container

# --- Releases
health_timeout = 180  # seconds a new version gets to answer ready before it is thrown away (the old one keeps serving)
drain_timeout = 10  # seconds in-flight requests get to finish on the old version after the proxy switched
lock_timeout = 300  # seconds a release, restore or backup waits for another one of the app (or a stop) to finish
