#!/usr/bin/env bash
# The bundled proxy (one per server, shared by every app vpskit deploys there), as release.sh drives it.
# It owns the published ports; each app has one route file in sites/, written from the app's proxy-route
# template with its serving container as upstream. `caddy reload` is graceful and atomic: a route that
# cannot load (a port taken, a typo) leaves the running configuration as it was.

PROXY_DIR=/opt/vpskit-proxy
PROXY=vpskit-proxy

proxy_get() { # proxy_get URL: fetched from inside the proxy's container (its network view)
  docker exec "$PROXY" wget -q -T 5 -O - "$1" 2>/dev/null
}

proxy_reload() { # its output (Caddy's log lines) only when it fails
  local out
  out=$(docker exec "$PROXY" caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile 2>&1) && return 0
  echo "$out" | grep -v '"level":"info"' | tail -5 >&2
  return 1
}

# The proxy's lock (fd 6), shared with the deploy's changes to its ports (vpskit/proxy.py up_command): two apps
# switching at once must not reload Caddy with each other's route half written, or the older one last.
proxy_lock() { mkdir -p "$PROXY_DIR/etc/sites" && exec 6>>"$PROXY_DIR/.lock" && flock -w 120 6; }
proxy_unlock() { flock -u 6 2>/dev/null || true; }

route_to() { # route_to TEMPLATE APP UPSTREAM: the app's route points at UPSTREAM (host:port), or stays as it was
  local site="$PROXY_DIR/etc/sites/$2.caddy" ok=1
  proxy_lock || { echo "the proxy stayed locked by another deploy for 120s" >&2; return 1; }
  [ ! -f "$site" ] || cp "$site" "$site.previous"
  sed "s/@UPSTREAM@/$3/g" "$1" > "$site.new" && mv "$site.new" "$site"
  if proxy_reload; then
    rm -f "$site.previous"
  else
    if [ -f "$site.previous" ]; then mv "$site.previous" "$site"; else rm -f "$site"; fi
    proxy_reload || true
    ok=0
  fi
  proxy_unlock
  [ "$ok" = 1 ]
}

route_remove() { # route_remove APP
  [ -f "$PROXY_DIR/etc/sites/$1.caddy" ] || return 0
  proxy_lock || return 1
  rm -f "$PROXY_DIR/etc/sites/$1.caddy"
  proxy_reload
  local rc=$?
  proxy_unlock
  return "$rc"
}

in_flight() { # in_flight UPSTREAM: requests the proxy still has open to UPSTREAM (0 when unknown)
  proxy_get http://localhost:2019/reverse_proxy/upstreams | tr '{' '\n' \
    | sed -n "s/.*\"address\":\"$1\",\"num_requests\":\([0-9]*\).*/\1/p" | awk '{n += $1} END {print n + 0}'
}
