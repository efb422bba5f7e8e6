"""vpskit inventory: from VPSKIT_* in the environment or .env; the local demo VPS otherwise.

    pyinfra inventory.py deploy.py

One server: VPSKIT_HOST (with VPSKIT_SSH_PORT, VPSKIT_SSH_USER, VPSKIT_SSH_KEY).
Several: VPSKIT_APP_HOSTS="203.0.113.5 10.0.0.5, 203.0.113.6 10.0.0.6" and VPSKIT_DB_HOST="203.0.113.7 10.0.0.7"
(each server: its SSH address[:port], then its private IPv4 address: the db server's packet filter takes
addresses, not names). Or list them here as pyinfra inventories do:

    from vpskit.inventory import servers
    app_servers, db_servers = servers(
        app=[("web1.example.com", {"private_address": "10.0.0.5"}),
             ("web2.example.com", {"ssh_port": 2222, "private_address": "10.0.0.6"})],
        db=("db1.example.com", {"private_address": "10.0.0.7"})).values()
    production = app_servers + db_servers
"""

import sys

from vpskit.inventory import hosts
from vpskit.settings import SettingsError

try:
    _hosts = hosts()
except SettingsError as _err:
    print(f"vpskit: {_err}", file=sys.stderr)
    sys.exit(2)

production = _hosts["production"]
staging = _hosts["staging"]
app_servers = _hosts["app_servers"]  # several servers: the app servers (empty on one server)
db_servers = _hosts["db_servers"]  # several servers: the db server (empty on one server)
