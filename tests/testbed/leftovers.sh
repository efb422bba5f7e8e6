#!/usr/bin/env bash
# Fails when a test run left anything of its own behind: containers, volumes, images or processes.
set -uo pipefail
found=0
report() { echo "leftover $1: $2"; found=1; }
for c in $(docker ps -aq --filter label=vpskit.testbed.session); do
  s=$(docker inspect -f '{{ index .Config.Labels "vpskit.testbed.session" }}' "$c")
  [[ $s == pytest-* ]] && report container "$(docker inspect -f '{{.Name}}' "$c")"
done
for v in $(docker volume ls -q --filter label=vpskit.testbed.session); do
  s=$(docker volume inspect -f '{{ index .Labels "vpskit.testbed.session" }}' "$v")
  [[ $s == pytest-* ]] && report volume "$v"
done
for i in $(docker images -q --filter label=vpskit.testbed.session | sort -u); do report image "$i"; done
for p in $(pgrep -f 'vpskit-test-' || true); do report process "$(ps -o args= -p "$p")"; done
if [ "$found" = 0 ]; then echo "no leftovers: the test run removed every container, volume, image and process it made"; fi
exit $found
