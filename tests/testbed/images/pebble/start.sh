#!/bin/sh
# The listener's certificate names every address of this container, then pebble runs.
set -e
cd /etc/pebble
san="DNS:pebble,DNS:localhost,IP:127.0.0.1"
for ip in $(hostname -I); do san="$san,IP:$ip"; done
openssl req -newkey rsa:2048 -nodes -subj "/CN=pebble" -keyout listener.key -out listener.csr 2>/dev/null
printf 'subjectAltName=%s\n' "$san" > san.ext
openssl x509 -req -in listener.csr -CA listener-ca.pem -CAkey listener-ca.key -CAcreateserial -days 3650 \
  -extfile san.ext -out listener.pem 2>/dev/null
exec pebble -config /etc/pebble/config.json
