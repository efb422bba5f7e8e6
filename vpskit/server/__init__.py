"""vpskit's server program: what runs on the server as root, in Python (standard library only, 3.11+).

The deploy ships this package to {app_dir}/bin/vpskit_server/ with the launcher {app_dir}/bin/vpskit-server
(files/vpskit-server); the client imports the same modules (vpskit.server.*) where it needs the same rule, so
each rule has one home. Decisions are pure functions over typed values (unit-tested with recorded outputs);
`effects` is the only module that runs commands.
"""
