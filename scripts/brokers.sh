#!/usr/bin/env bash
# Makes the three brokers payq's tests use reachable on loopback, without Docker:
#   Kafka     127.0.0.1:9092  a real Apache Kafka (KRaft, single node) from the Maven Central jars,
#                             also SASL_SSL + SCRAM-SHA-512 on 127.0.0.1:9093 and SASL_PLAINTEXT +
#                             PLAIN on 127.0.0.1:9094 (user payq, password payq-secret)
#   RabbitMQ  127.0.0.1:5672  the machine's rabbitmq-server (guest/guest), and a TLS listener on
#                             127.0.0.1:5671 added to the running node (rabbitmqctl eval; 5672 is
#                             not touched)
#   NATS      127.0.0.1:4222  the machine's nats-server with JetStream, and a second nats-server of
#                             this script's own with TLS and user/password (payq / payq-secret) on
#                             127.0.0.1:4223
#
#   scripts/brokers.sh up       start what is not running (safe to run twice)
#   scripts/brokers.sh down     stop only what this script started
#   scripts/brokers.sh status   one line per broker, then `ca: PATH` (the throw-away CA certificate)
#   scripts/brokers.sh restart kafka|rabbitmq|nats
#                               a failure drill: Kafka is killed (SIGKILL) and started again on the
#                               same data; RabbitMQ by rabbitmqctl stop_app/start_app; NATS only a
#                               server this script started, on the same store (only brokers this
#                               script started are killed)
#
# The TLS listeners use a throw-away CA and server certificate (127.0.0.1, ::1, localhost) made
# with openssl into the state folder on the first `up`; clients trust them with `?ca=PATH`.
#
# State (PIDs, what we started, Kafka's temporary data folder) lives in
# ${PAYQ_STATE_DIR:-/tmp/payq-brokers}. Brokers that were already running are never touched.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${PAYQ_STATE_DIR:-/tmp/payq-brokers}"
KAFKA_POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_LIB="$ROOT/scripts/kafka/target/lib"
KAFKA_HOST=127.0.0.1
# Overridable so the script itself can be tested beside running brokers.
KAFKA_PORT="${PAYQ_KAFKA_PORT:-9092}"
KAFKA_SASL_SSL_PORT="${PAYQ_KAFKA_SASL_SSL_PORT:-9093}"
KAFKA_SASL_PLAIN_PORT="${PAYQ_KAFKA_SASL_PLAIN_PORT:-9094}"
KAFKA_CONTROLLER_PORT="${PAYQ_KAFKA_CONTROLLER_PORT:-9095}"
# The one SASL account, on both SASL listeners and the NATS TLS server. Test credentials only.
SASL_USER=payq
SASL_PASSWORD=payq-secret
RABBIT_PORT=5672
RABBIT_TLS_PORT="${PAYQ_RABBIT_TLS_PORT:-5671}"
NATS_PORT="${PAYQ_NATS_PORT:-4222}"
NATS_STORE_DIR="${PAYQ_NATS_STORE_DIR:-/var/lib/nats-server}"
NATS_LOG="${PAYQ_NATS_LOG:-/var/log/nats-server.log}"
NATS_TLS_PORT="${PAYQ_NATS_TLS_PORT:-4223}"
TLS_DIR="$STATE_DIR/tls"
WAIT_SECONDS="${PAYQ_BROKER_WAIT:-60}"

log() { printf '%s\n' "$*" >&2; }
die() { log "brokers.sh: $*"; exit 1; }

# --- probes ------------------------------------------------------------------------------------

port_open() { # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# A Kafka broker that answers a metadata request, not just an open port. Uses kafkajs from the
# repo's node_modules (already installed for payq itself); a JVM tool would take seconds to start.
# A fresh broker creates and loads __consumer_offsets on the first group join, answering
# COORDINATOR_LOAD_IN_PROGRESS meanwhile: join one throwaway group now, so the first real
# consumer (a test, a CI job) does not pay for it. Best effort: payq retries such joins too.
kafka_warm_coordinator() {
  [[ -d "$ROOT/node_modules/kafkajs" ]] || return 0
  (cd "$ROOT" && timeout 60 node -e '
    const { Kafka, logLevel } = require("kafkajs");
    const kafka = new Kafka({ clientId: "payq-brokers-sh", brokers: [process.argv[1]], logLevel: logLevel.NOTHING });
    const group = "payq-brokers-sh.warm-up";
    const consumer = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500 });
    const admin = kafka.admin();
    (async () => {
      await consumer.connect();
      const joined = new Promise((resolve) => consumer.on(consumer.events.GROUP_JOIN, resolve));
      await consumer.subscribe({ topics: [/^__payq_never_matches$/] }).catch(() => undefined);
      await consumer.run({ eachMessage: async () => {} });
      await Promise.race([joined, new Promise((r) => setTimeout(r, 45000))]);
      await consumer.disconnect();
      await admin.connect();
      await admin.deleteGroups([group]).catch(() => undefined);
      await admin.disconnect();
    })().then(() => process.exit(0), () => process.exit(0));
  ' "$KAFKA_HOST:$KAFKA_PORT") >/dev/null 2>&1 || true
}

kafka_answers() {
  port_open "$KAFKA_HOST" "$KAFKA_PORT" || return 1
  if [[ ! -d "$ROOT/node_modules/kafkajs" ]]; then
    return 0 # can't check deeper without kafkajs; an open port is the best we know
  fi
  (cd "$ROOT" && timeout 10 node -e '
    const { Kafka, logLevel } = require("kafkajs");
    const kafka = new Kafka({ clientId: "payq-brokers-sh", brokers: [process.argv[1]], logLevel: logLevel.NOTHING,
      connectionTimeout: 1000, requestTimeout: 3000, retry: { retries: 0 } });
    const admin = kafka.admin();
    admin.connect().then(() => admin.listTopics()).then(() => admin.disconnect())
      .then(() => process.exit(0), () => process.exit(1));
  ' "$KAFKA_HOST:$KAFKA_PORT") >/dev/null 2>&1
}

# AMQP 0-9-1: the server answers the protocol header with a Connection.Start frame (type 1).
rabbit_answers() {
  local out
  out="$(timeout 4 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RABBIT_PORT && printf 'AMQP\\x00\\x00\\x09\\x01' >&3 && head -c 1 <&3 | od -An -tx1" 2>/dev/null)" || return 1
  [[ "$out" == *01* ]]
}

# NATS greets every client with an INFO line.
nats_answers() {
  local out
  out="$(timeout 4 bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT && head -c 4 <&3" 2>/dev/null)" || return 1
  [[ "$out" == INFO ]]
}

# True when the PID is alive and its command line contains the pattern (guards against PID reuse).
pid_alive() { # pid pattern
  [[ -n "$1" && -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"
}

read_state() { # name → contents or empty
  [[ -f "$STATE_DIR/$1" ]] && cat "$STATE_DIR/$1" || true
}

wait_for() { # seconds probe-function
  local deadline=$((SECONDS + $1))
  while ((SECONDS < deadline)); do
    "$2" && return 0
    sleep 0.5
  done
  return 1
}

# --- TLS material ------------------------------------------------------------------------------

# A CA and one server certificate for loopback, made once per state folder. Throw-away by design:
# the CA key never leaves the state folder and nothing outside this machine trusts it.
tls_material() {
  [[ -s "$TLS_DIR/server.p12" && -s "$TLS_DIR/ca.pem" ]] && return 0
  command -v openssl >/dev/null || die "openssl is needed to make the test certificates"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj "/CN=payq test CA" \
      -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
      -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 \
      -extfile server.ext -out server.pem 2>/dev/null
    # A client certificate from the same CA, for mutual TLS tests.
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=payq-client" \
      -keyout client.key -out client.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 \
      -extfile client.ext -out client.pem 2>/dev/null
    # Kafka reads a PKCS12 keystore and truststore.
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name server \
      -passout pass:payq-keystore -out server.p12
    rm -f server.csr client.csr server.ext client.ext
    chmod 600 ./*.key
  ) || die "tls: making the test certificates with openssl failed"
  if command -v keytool >/dev/null; then
    rm -f "$TLS_DIR/truststore.p12"
    keytool -importcert -noprompt -alias payq-ca -file "$TLS_DIR/ca.pem" -storetype PKCS12 \
      -keystore "$TLS_DIR/truststore.p12" -storepass payq-keystore >/dev/null 2>&1 ||
      die "tls: keytool could not make the truststore"
  fi
  log "tls: test CA and certificates in $TLS_DIR"
}

# --- Kafka -------------------------------------------------------------------------------------

kafka_pid() {
  local pid
  pid="$(read_state kafka.pid)"
  pid_alive "$pid" 'kafka.Kafka' && echo "$pid" || true
}

kafka_jars() {
  if compgen -G "$KAFKA_LIB/kafka_2.13-*.jar" >/dev/null; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars"
  log "kafka: fetching the Apache Kafka jars with Maven (once)…"
  (cd "$ROOT/scripts/kafka" && mvn -q -B -f pom.xml dependency:copy-dependencies \
    -DoutputDirectory=target/lib -DincludeScope=runtime) || die "mvn could not fetch the Kafka jars"
}

kafka_log_tail() {
  local dir="$1"
  # The cause is usually an ERROR well before the end: Kafka dumps its config while shutting down.
  if grep -q -E '^\[[^]]*\] (ERROR|FATAL)' "$dir/server.log" 2>/dev/null; then
    log "---- errors in $dir/server.log ----"
    grep -A2 -E '^\[[^]]*\] (ERROR|FATAL)' "$dir/server.log" | head -n 20 >&2 || true
  fi
  log "---- last lines of $dir/server.log ----"
  tail -n 25 "$dir/server.log" >&2 2>/dev/null || true
  if [[ -s "$dir/stdout.log" ]]; then
    log "---- last lines of $dir/stdout.log ----"
    tail -n 20 "$dir/stdout.log" >&2 || true
  fi
}

kafka_up() {
  local pid dir
  pid="$(kafka_pid)"
  if [[ -n "$pid" ]]; then
    dir="$(read_state kafka.dir)"
    if wait_for "$WAIT_SECONDS" kafka_answers; then
      log "kafka: already running (pid $pid, started by this script, data $dir)"
      return 0
    fi
    kafka_log_tail "$dir"
    die "kafka: pid $pid runs but does not answer on $KAFKA_HOST:$KAFKA_PORT"
  fi
  if kafka_answers; then
    log "kafka: already answering on $KAFKA_HOST:$KAFKA_PORT (not started by this script; left alone)"
    return 0
  fi
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    die "kafka: something listens on $KAFKA_HOST:$KAFKA_PORT but does not answer Kafka requests"
  fi
  command -v java >/dev/null || die "java is needed to run Kafka"
  kafka_jars
  tls_material

  dir="$(mktemp -d /tmp/payq-kafka.XXXXXX)"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_SSL_PORT,SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_SASL_PLAIN_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_SSL_PORT,SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_SASL_PLAIN_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
# SASL_SSL: SCRAM-SHA-512 (the credential is written at format time); SASL_PLAINTEXT: PLAIN.
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/server.p12
ssl.keystore.password=payq-keystore
ssl.key.password=payq-keystore
ssl.client.auth=none
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests create many short-lived groups: let the first member in start at once.
group.initial.rebalance.delay.ms=0
EOF
  cat >"$dir/log4j2.properties" <<EOF
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  local cp="$KAFKA_LIB/*" uuid
  uuid="$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$dir/stdout.log" | tail -n 1)"
  [[ -n "$uuid" ]] || { kafka_log_tail "$dir"; die "kafka: StorageTool random-uuid failed"; }
  if ! java -cp "$cp" -Dlog4j2.configurationFile="$dir/log4j2.properties" kafka.tools.StorageTool format \
    -t "$uuid" -c "$dir/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]" >>"$dir/stdout.log" 2>&1; then
    kafka_log_tail "$dir"
    die "kafka: formatting the storage failed"
  fi

  kafka_launch "$dir"
}

# Starts the broker on an existing data folder and waits until it answers (also used by restart).
kafka_launch() { # dir
  local dir="$1" cp="$KAFKA_LIB/*" pid
  mkdir -p "$STATE_DIR"
  # setsid: the broker must outlive this shell and not get its terminal's Ctrl-C.
  setsid nohup java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >>"$dir/stdout.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$STATE_DIR/kafka.pid"
  echo "$dir" >"$STATE_DIR/kafka.dir"
  log "kafka: starting Apache Kafka (pid $pid, data $dir)…"

  local started=$SECONDS deadline=$((SECONDS + WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    # kill -0, not pid_alive: right after the fork the child's command line is still this shell's.
    if ! kill -0 "$pid" 2>/dev/null; then
      kafka_log_tail "$dir"
      rm -f "$STATE_DIR/kafka.pid"
      die "kafka: the broker exited during start-up"
    fi
    if kafka_answers && kill -0 "$pid" 2>/dev/null; then
      kafka_warm_coordinator
      log "kafka: up on $KAFKA_HOST:$KAFKA_PORT (SASL_SSL $KAFKA_SASL_SSL_PORT, SASL_PLAINTEXT $KAFKA_SASL_PLAIN_PORT) after $((SECONDS - started))s"
      return 0
    fi
    sleep 0.5
  done
  kafka_log_tail "$dir"
  kill "$pid" 2>/dev/null || true
  rm -f "$STATE_DIR/kafka.pid"
  die "kafka: not answering on $KAFKA_HOST:$KAFKA_PORT after ${WAIT_SECONDS}s"
}

# A crash and a restart on the same data: SIGKILL (no clean shutdown), then start again.
kafka_restart() {
  local pid dir
  pid="$(kafka_pid)"
  dir="$(read_state kafka.dir)"
  [[ -n "$pid" && -n "$dir" ]] || die "kafka: not started by this script; refusing to restart it"
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  log "kafka: killed pid $pid (SIGKILL)"
  sleep "${PAYQ_RESTART_PAUSE:-2}"
  kafka_launch "$dir"
}

kafka_down() {
  local pid dir
  pid="$(kafka_pid)"
  dir="$(read_state kafka.dir)"
  if [[ -z "$pid" ]]; then
    rm -f "$STATE_DIR/kafka.pid"
    log "kafka: not started by this script; nothing to stop"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while pid_alive "$pid" 'kafka.Kafka' && ((SECONDS < deadline)); do sleep 0.5; done
  if pid_alive "$pid" 'kafka.Kafka'; then
    log "kafka: pid $pid did not stop within 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE_DIR/kafka.pid" "$STATE_DIR/kafka.dir"
  # The data folder is throwaway by design (a fresh broker per `up`).
  [[ -n "$dir" && "$dir" == /tmp/payq-kafka.* ]] && rm -rf "$dir"
  log "kafka: stopped (pid $pid)"
}

kafka_status() {
  local pid state
  pid="$(kafka_pid)"
  if kafka_answers; then state=up; elif [[ -n "$pid" ]]; then state=starting; else state=down; fi
  if [[ -n "$pid" ]]; then
    printf 'kafka     %-8s %s:%s  started by brokers.sh (pid %s, data %s; SASL_SSL :%s, SASL_PLAINTEXT :%s)\n' "$state" "$KAFKA_HOST" "$KAFKA_PORT" "$pid" "$(read_state kafka.dir)" "$KAFKA_SASL_SSL_PORT" "$KAFKA_SASL_PLAIN_PORT"
  else
    printf 'kafka     %-8s %s:%s  %s\n' "$state" "$KAFKA_HOST" "$KAFKA_PORT" "$([[ $state == up ]] && echo 'not managed by brokers.sh' || echo 'run: scripts/brokers.sh up')"
  fi
}

# --- RabbitMQ ----------------------------------------------------------------------------------

rabbit_up() {
  if rabbit_answers; then
    if [[ -f "$STATE_DIR/rabbitmq.started" ]]; then
      log "rabbitmq: already running (started by this script)"
    else
      log "rabbitmq: already answering on 127.0.0.1:$RABBIT_PORT (left alone)"
    fi
    return 0
  fi
  command -v rabbitmq-server >/dev/null || die "rabbitmq: down and rabbitmq-server is not installed"
  mkdir -p "$STATE_DIR"
  log "rabbitmq: starting rabbitmq-server…"
  rabbitmq-server -detached >/dev/null 2>&1 || die "rabbitmq: rabbitmq-server -detached failed"
  date -u +%FT%TZ >"$STATE_DIR/rabbitmq.started"
  wait_for "$WAIT_SECONDS" rabbit_answers || die "rabbitmq: not answering on 127.0.0.1:$RABBIT_PORT after ${WAIT_SECONDS}s"
  log "rabbitmq: up on 127.0.0.1:$RABBIT_PORT"
}

rabbit_down() {
  if [[ ! -f "$STATE_DIR/rabbitmq.started" ]]; then
    log "rabbitmq: not started by this script; nothing to stop"
    return 0
  fi
  rabbitmqctl stop >/dev/null 2>&1 || log "rabbitmq: rabbitmqctl stop failed (already stopped?)"
  rm -f "$STATE_DIR/rabbitmq.started"
  log "rabbitmq: stopped"
}

# The broker's application stops and starts again inside its running node (its data kept).
rabbit_restart() {
  command -v rabbitmqctl >/dev/null || die "rabbitmq: rabbitmqctl is not installed"
  rabbitmqctl stop_app >/dev/null 2>&1 || die "rabbitmq: rabbitmqctl stop_app failed"
  log "rabbitmq: application stopped"
  sleep "${PAYQ_RESTART_PAUSE:-2}"
  rabbitmqctl start_app >/dev/null 2>&1 || die "rabbitmq: rabbitmqctl start_app failed"
  wait_for "$WAIT_SECONDS" rabbit_answers || die "rabbitmq: not answering on 127.0.0.1:$RABBIT_PORT after start_app"
  log "rabbitmq: application started again"
  # A listener added at run time does not survive stop_app: add it again.
  if [[ -f "$STATE_DIR/rabbitmq-tls.started" ]]; then
    rm -f "$STATE_DIR/rabbitmq-tls.started"
    rabbit_tls_up
  fi
}

rabbit_status() {
  local state owner
  rabbit_answers && state=up || state=down
  [[ -f "$STATE_DIR/rabbitmq.started" ]] && owner='started by brokers.sh' || owner='not managed by brokers.sh'
  printf 'rabbitmq  %-8s 127.0.0.1:%s  %s\n' "$state" "$RABBIT_PORT" "$owner"
}

# A TLS listener added to the running node at run time: nothing is restarted and 5672 keeps its
# connections. The node runs as its own user, so it gets a readable copy of the server's files.
rabbit_tls_answers() { port_open 127.0.0.1 "$RABBIT_TLS_PORT"; }

rabbit_tls_up() {
  if rabbit_tls_answers; then
    if [[ -f "$STATE_DIR/rabbitmq-tls.started" ]]; then
      log "rabbitmq-tls: already listening on 127.0.0.1:$RABBIT_TLS_PORT (added by this script)"
      return 0
    fi
    # A listener left by an earlier state folder carries another throw-away CA: replace it, but
    # only when its certificate is one this script makes (issued by "payq test CA").
    local issuer
    issuer="$(timeout 5 openssl s_client -connect "127.0.0.1:$RABBIT_TLS_PORT" </dev/null 2>/dev/null | openssl x509 -noout -issuer 2>/dev/null || true)"
    if [[ "$issuer" != *"payq test CA"* ]]; then
      log "rabbitmq-tls: something else listens on 127.0.0.1:$RABBIT_TLS_PORT (left alone)"
      return 0
    fi
    timeout 30 rabbitmqctl eval "rabbit_networking:stop_tcp_listener({\"127.0.0.1\", $RABBIT_TLS_PORT})." >/dev/null 2>&1 || true
    for _ in $(seq 25); do rabbit_tls_answers || break; sleep 0.2; done
    log "rabbitmq-tls: replacing a TLS listener of an earlier payq test CA"
  fi
  command -v rabbitmqctl >/dev/null || { log "rabbitmq-tls: rabbitmqctl is not installed; no TLS listener"; return 0; }
  tls_material
  # A folder of its own per start: the node caches PEM files by path.
  local dir="$STATE_DIR/rabbitmq-tls/$$"
  mkdir -p "$dir"
  cp "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem" "$TLS_DIR/server.key" "$dir/"
  if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq "$STATE_DIR/rabbitmq-tls"; fi
  chmod 711 "$STATE_DIR/rabbitmq-tls"
  chmod 700 "$dir"
  chmod 600 "$dir"/*
  chmod 711 "$STATE_DIR"
  local result
  result="$(timeout 30 rabbitmqctl eval "rabbit_networking:start_ssl_listener({\"127.0.0.1\", $RABBIT_TLS_PORT}, [{cacertfile, \"$dir/ca.pem\"}, {certfile, \"$dir/server.pem\"}, {keyfile, \"$dir/server.key\"}, {verify, verify_none}, {fail_if_no_peer_cert, false}], 1)." 2>&1)" || true
  if [[ "$result" != ok ]] || ! wait_for 10 rabbit_tls_answers; then
    die "rabbitmq-tls: could not add a TLS listener on 127.0.0.1:$RABBIT_TLS_PORT: ${result:0:200}"
  fi
  date -u +%FT%TZ >"$STATE_DIR/rabbitmq-tls.started"
  log "rabbitmq-tls: TLS listener on 127.0.0.1:$RABBIT_TLS_PORT"
}

rabbit_tls_down() {
  [[ -f "$STATE_DIR/rabbitmq-tls.started" ]] || return 0
  timeout 30 rabbitmqctl eval "rabbit_networking:stop_tcp_listener({\"127.0.0.1\", $RABBIT_TLS_PORT})." >/dev/null 2>&1 ||
    log "rabbitmq-tls: could not stop the TLS listener (node down?)"
  rm -f "$STATE_DIR/rabbitmq-tls.started"
  log "rabbitmq-tls: TLS listener on 127.0.0.1:$RABBIT_TLS_PORT stopped"
}

rabbit_tls_status() {
  local state
  rabbit_tls_answers && state=up || state=down
  printf 'rabbitmq-tls %-5s 127.0.0.1:%s  %s\n' "$state" "$RABBIT_TLS_PORT" "$([[ -f $STATE_DIR/rabbitmq-tls.started ]] && echo 'added by brokers.sh to the running node' || echo 'not managed by brokers.sh')"
}

# --- NATS --------------------------------------------------------------------------------------

nats_pid() {
  local pid
  pid="$(read_state nats.pid)"
  pid_alive "$pid" 'nats-server' && echo "$pid" || true
}

nats_up() {
  if nats_answers; then
    if [[ -n "$(nats_pid)" ]]; then
      log "nats: already running (pid $(nats_pid), started by this script)"
    else
      log "nats: already answering on 127.0.0.1:$NATS_PORT (left alone)"
    fi
    return 0
  fi
  [[ -x /usr/sbin/nats-server ]] || die "nats: down and /usr/sbin/nats-server is not installed"
  mkdir -p "$STATE_DIR"
  log "nats: starting nats-server with JetStream…"
  start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$STATE_DIR/nats.pid" \
    --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_STORE_DIR" \
    -l "$NATS_LOG" || die "nats: start-stop-daemon failed"
  wait_for "$WAIT_SECONDS" nats_answers || die "nats: not answering on 127.0.0.1:$NATS_PORT after ${WAIT_SECONDS}s"
  log "nats: up on 127.0.0.1:$NATS_PORT (pid $(read_state nats.pid))"
}

nats_down() {
  local pid
  pid="$(nats_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$STATE_DIR/nats.pid"
    log "nats: not started by this script; nothing to stop"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while pid_alive "$pid" 'nats-server' && ((SECONDS < deadline)); do sleep 0.2; done
  rm -f "$STATE_DIR/nats.pid"
  log "nats: stopped (pid $pid)"
}

nats_status() {
  local state pid
  nats_answers && state=up || state=down
  pid="$(nats_pid)"
  if [[ -n "$pid" ]]; then
    printf 'nats      %-8s 127.0.0.1:%s  started by brokers.sh (pid %s)\n' "$state" "$NATS_PORT" "$pid"
  else
    printf 'nats      %-8s 127.0.0.1:%s  not managed by brokers.sh\n' "$state" "$NATS_PORT"
  fi
}

# --- NATS with TLS and a password (this script's own server) -----------------------------------

nats_tls_pid() {
  local pid
  pid="$(read_state nats-tls.pid)"
  pid_alive "$pid" 'nats-tls.conf' && echo "$pid" || true
}

nats_tls_answers() { port_open 127.0.0.1 "$NATS_TLS_PORT"; }

nats_tls_up() {
  if [[ -n "$(nats_tls_pid)" ]] && nats_tls_answers; then
    log "nats-tls: already running (pid $(nats_tls_pid), started by this script)"
    return 0
  fi
  if nats_tls_answers; then
    log "nats-tls: something else listens on 127.0.0.1:$NATS_TLS_PORT (left alone)"
    return 0
  fi
  [[ -x /usr/sbin/nats-server ]] || die "nats-tls: /usr/sbin/nats-server is not installed"
  tls_material
  local dir="$STATE_DIR/nats-tls"
  mkdir -p "$dir/store"
  cat >"$dir/nats-tls.conf" <<EOF
listen: 127.0.0.1:$NATS_TLS_PORT
jetstream { store_dir: "$dir/store" }
tls {
  cert_file: "$TLS_DIR/server.pem"
  key_file: "$TLS_DIR/server.key"
  ca_file: "$TLS_DIR/ca.pem"
  timeout: 5
}
authorization { user: "$SASL_USER", password: "$SASL_PASSWORD" }
EOF
  start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$STATE_DIR/nats-tls.pid" \
    --exec /usr/sbin/nats-server -- -c "$dir/nats-tls.conf" -l "$dir/server.log" ||
    die "nats-tls: start-stop-daemon failed"
  wait_for "$WAIT_SECONDS" nats_tls_answers || die "nats-tls: not answering on 127.0.0.1:$NATS_TLS_PORT after ${WAIT_SECONDS}s"
  log "nats-tls: up on 127.0.0.1:$NATS_TLS_PORT with TLS and user/password (pid $(read_state nats-tls.pid))"
}

nats_tls_down() {
  local pid
  pid="$(nats_tls_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$STATE_DIR/nats-tls.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while pid_alive "$pid" 'nats-tls.conf' && ((SECONDS < deadline)); do sleep 0.2; done
  rm -f "$STATE_DIR/nats-tls.pid"
  log "nats-tls: stopped (pid $pid)"
}

nats_tls_status() {
  local state pid
  nats_tls_answers && state=up || state=down
  pid="$(nats_tls_pid)"
  printf 'nats-tls  %-8s 127.0.0.1:%s  %s\n' "$state" "$NATS_TLS_PORT" "$([[ -n $pid ]] && echo "started by brokers.sh (pid $pid), TLS + user/password" || echo 'run: scripts/brokers.sh up')"
}

# A restart on the same store: the machine's NATS is never restarted; only servers this script
# started (the TLS one, or the plain one when the script started it).
nats_restart() {
  local pid
  pid="$(nats_pid)"
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    while pid_alive "$pid" 'nats-server -a'; do sleep 0.1; done
    rm -f "$STATE_DIR/nats.pid"
    log "nats: stopped pid $pid"
    sleep "${PAYQ_RESTART_PAUSE:-2}"
    nats_up
    return 0
  fi
  pid="$(nats_tls_pid)"
  [[ -n "$pid" ]] || die "nats: no NATS server started by this script to restart (the machine's is left alone)"
  kill -TERM "$pid" 2>/dev/null || true
  while pid_alive "$pid" 'nats-tls.conf'; do sleep 0.1; done
  rm -f "$STATE_DIR/nats-tls.pid"
  log "nats-tls: stopped pid $pid"
  sleep "${PAYQ_RESTART_PAUSE:-2}"
  nats_tls_up
}

# --- main --------------------------------------------------------------------------------------

case "${1:-}" in
  up)
    case "${2:-all}" in
      all) kafka_up; rabbit_up; rabbit_tls_up; nats_up; nats_tls_up ;;
      kafka) kafka_up ;; # alone: e.g. a Kafka of a drill's own, on other ports and state folder
      *) log "usage: scripts/brokers.sh up [kafka]"; exit 2 ;;
    esac
    ;;
  down)
    case "${2:-all}" in
      all) kafka_down; rabbit_tls_down; rabbit_down; nats_down; nats_tls_down ;;
      kafka) kafka_down ;;
      *) log "usage: scripts/brokers.sh down [kafka]"; exit 2 ;;
    esac
    ;;
  status)
    kafka_status
    rabbit_status
    rabbit_tls_status
    nats_status
    nats_tls_status
    [[ -s "$TLS_DIR/ca.pem" ]] && echo "ca: $TLS_DIR/ca.pem" || echo "ca: none yet (run: scripts/brokers.sh up)"
    ;;
  restart)
    case "${2:-}" in
      kafka) kafka_restart ;;
      rabbitmq) rabbit_restart ;;
      nats) nats_restart ;;
      *) log "usage: scripts/brokers.sh restart kafka|rabbitmq|nats"; exit 2 ;;
    esac
    ;;
  *)
    log "usage: scripts/brokers.sh up [kafka]|down [kafka]|status|restart kafka|rabbitmq|nats"
    exit 2
    ;;
esac
