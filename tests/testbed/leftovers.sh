#!/usr/bin/env bash
# Fails when a test run left anything of its own behind: containers, volumes, networks and images labelled with a
# pytest session (vpskit.testbed.session=pytest-*), or processes bound to a test VPS (SSH tunnels and
# commands using a key under .testbed/vps/vpskit-<tag>-<pid>-<n>/; the demo you keep, vpskit-demo, is not one).
set -uo pipefail
found=0
report() { echo "leftover $1: $2"; found=1; }
session_of() { docker inspect -f '{{ index .Config.Labels "vpskit.testbed.session" }}' "$1" 2>/dev/null; }
for c in $(docker ps -aq --filter label=vpskit.testbed.session); do
  [[ $(session_of "$c") == pytest-* ]] && report container "$(docker inspect -f '{{.Name}}' "$c")"
done
for v in $(docker volume ls -q --filter label=vpskit.testbed.session); do
  s=$(docker volume inspect -f '{{ index .Labels "vpskit.testbed.session" }}' "$v")
  [[ $s == pytest-* ]] && report volume "$v"
done
for n in $(docker network ls -q --filter label=vpskit.testbed.session); do
  s=$(docker network inspect -f '{{ index .Labels "vpskit.testbed.session" }}' "$n" 2>/dev/null)
  [[ $s == pytest-* ]] && report network "$(docker network inspect -f '{{.Name}}' "$n")"
done
for i in $(docker images -q --filter label=vpskit.testbed.session | sort -u); do
  [[ $(session_of "$i") == pytest-* ]] && report image "$i $(docker image inspect -f '{{.RepoTags}}' "$i")"
done
for p in $(pgrep -f '\.testbed/vps/vpskit-[a-z0-9-]+-[0-9]+(-[0-9]+)?/' || true); do
  [ "$p" = "$$" ] || report process "$p $(ps -o args= -p "$p")"
done
if [ "$found" = 0 ]; then echo "no leftovers: the test run removed every container, volume, network, image and process it made"; fi
exit $found
