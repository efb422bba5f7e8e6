"""The floor for bench/noop_redeploy.py: a pyinfra run with one operation over the same SSH connection."""

from pyinfra.operations import server

server.shell(name="One no-op command", commands=["true"])
