#!/bin/sh
# The official redis image's contract, for its stand-in: `redis-server [ARGS]` runs the server on
# the container's network without persistence (the broker's queue is transient here), ARGS last
# so they win and so a trailing `-` (configuration on stdin) stays the last argument; anything
# else is run as given. The image already runs as the `redis` user.
set -e
if [ "$1" = redis-server ]; then
  shift
  exec redis-server --bind 0.0.0.0 --protected-mode no --save '' --appendonly no "$@"
fi
exec "$@"
