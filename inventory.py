"""vpskit inventory: one host, from VPSKIT_* in the environment or .env; the local demo VPS otherwise.

    pyinfra inventory.py deploy.py
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
