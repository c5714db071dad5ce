#!/usr/bin/env bash
# Start PostgreSQL and RabbitMQ on this machine if they are not answering (the tests use the real ones).
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # port, seconds, name
  for _ in $(seq 1 "$2"); do port_open "$1" && return 0; sleep 1; done
  echo "ensure-services: $3 did not come up on port $1" >&2
  return 1
}

if ! port_open 5432; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  wait_port 5432 60 PostgreSQL
fi
# RabbitMQ answers an AMQP protocol header with a Connection.Start method frame (frame type 1). A broker that
# has run out of file handles keeps its port open but never answers: new connections wait in its
# file_handle_cache (seen here with the Debian default of 1024 open files and the suite's left-over queues).
amqp_answers() {
  (exec 3<>/dev/tcp/127.0.0.1/5672 && printf 'AMQP\x00\x00\x09\x01' >&3 &&
    [ "$(timeout 10 head -c 1 <&3 | od -An -tx1 | tr -d ' ')" = "01" ]) 2>/dev/null
}

# The Debian package starts RabbitMQ through `su`, which resets the open-files limit to 1024; rabbitmq-env.conf
# is sourced by the server's own script, so the limit is raised there (to the hard limit) before it starts.
raise_rabbitmq_file_limit() {
  local conf=/etc/rabbitmq/rabbitmq-env.conf
  if [ "$(id -u)" = 0 ] && [ -d /etc/rabbitmq ] && ! grep -qs 'ulimit -n' "$conf"; then
    printf '%s\n' "# bcsync scripts/ensure-services.sh: queues and sockets each hold file handles; 1024 runs out." \
      'ulimit -n "$(ulimit -Hn)" 2>/dev/null || true' >> "$conf"
  fi
}

start_rabbitmq() {
  raise_rabbitmq_file_limit
  rabbitmq-server -detached
  wait_port 5672 120 RabbitMQ
  for _ in $(seq 1 60); do amqp_answers && return 0; sleep 1; done
  echo "ensure-services: RabbitMQ does not answer AMQP on port 5672" >&2
  return 1
}

# The open-files limit of the running broker (empty when it cannot be read).
rabbitmq_file_limit() {
  local pid
  pid=$(pgrep -f 'beam.smp.*rabbit' | head -n 1) || return 0
  awk '/^Max open files/ {print $4}' "/proc/$pid/limits" 2>/dev/null || true
}

# A broker already running with the Debian default of 1,024 open files (started before us, through `su`) runs
# out during the suite: every quorum queue and connection holds handles, and a broker out of them stops
# answering (seen in CI: all later tests waited out their timeouts). As root, restart it with the raised limit.
low_file_limit() {
  local limit
  limit=$(rabbitmq_file_limit)
  [ "$(id -u)" = 0 ] && [ -n "$limit" ] && [ "$limit" != unlimited ] && [ "$limit" -lt 8192 ] &&
    [ "$(ulimit -Hn)" = unlimited -o "$(ulimit -Hn)" -gt "$limit" ]
}

if ! port_open 5672; then
  echo "ensure-services: starting RabbitMQ"
  start_rabbitmq
elif low_file_limit; then
  echo "ensure-services: RabbitMQ runs with $(rabbitmq_file_limit) open files at most: restarting it with $(ulimit -Hn)"
  timeout 60 rabbitmqctl stop >/dev/null 2>&1 || pkill -9 -f 'beam.smp.*rabbit' || true
  for _ in $(seq 1 30); do port_open 5672 || break; sleep 1; done
  start_rabbitmq
elif ! amqp_answers; then
  echo "ensure-services: RabbitMQ holds port 5672 but does not answer AMQP: restarting it"
  timeout 30 rabbitmqctl stop >/dev/null 2>&1 || pkill -9 -f 'beam.smp.*rabbit' || true
  for _ in $(seq 1 30); do port_open 5672 || break; sleep 1; done
  start_rabbitmq
fi
