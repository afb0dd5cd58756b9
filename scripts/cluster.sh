#!/usr/bin/env bash
# Runs a three-node RabbitMQ cluster on this machine, beside the default broker, for the cluster
# and TLS tests:
#   - nodes wr1, wr2 and wr3 (@localhost), each with its own ports, config, data, logs and pid
#     file under $CLUSTER_DIR, started as the rabbitmq user; wr2 and wr3 join wr1;
#   - wr1 also listens with TLS and requires a client certificate (EXTERNAL auth works there);
#     wr2 also listens with TLS without requiring one (the CA alone is enough, then PLAIN auth);
#   - a CA, a server certificate for localhost/127.0.0.1, a client certificate
#     (CN=warren-client) and an unrelated "wrong" CA with its own client certificate, made once
#     with openssl and cached under $CLUSTER_DIR/certs.
# The default node (rabbit@localhost: 5672, 15672, 15692, 25672, /etc/rabbitmq) is never touched:
# every rabbitmqctl call here names one of the nodes above with -n, and rabbitmq-plugins (which
# would edit /etc/rabbitmq/enabled_plugins) is never called.
#
#   scripts/cluster.sh start            start what is missing, cluster, wait, print the URLs
#   scripts/cluster.sh stop [NODE]      stop every node (or one), idempotent
#   scripts/cluster.sh status           each node's state and the membership; exit 0 iff all 3
#                                       run clustered
#   scripts/cluster.sh kill NODE        SIGKILL the node's beam.smp (node-loss tests)
#   scripts/cluster.sh freeze|thaw NODE SIGSTOP/SIGCONT it (a hung node: its peers drop it after
#                                       net_ticktime, ~60 s; thawed, it may stay partitioned:
#                                       `start` or `restart NODE` heals that)
#   scripts/cluster.sh restart NODE     start a stopped/killed node again (stop it first if it
#                                       runs) and wait until it runs in the cluster again
#   scripts/cluster.sh wipe             stop every node and delete its data (certs stay)
#   scripts/cluster.sh --env            export lines: `eval "$(scripts/cluster.sh --env)"`
# Needs root (it starts the nodes as the rabbitmq user with runuser) or the rabbitmq user itself.
set -euo pipefail

NODES=(wr1 wr2 wr3)
NODE_HOST=localhost
SEED=wr1 # the node the others join
declare -A AMQP_PORT=([wr1]=5681 [wr2]=5682 [wr3]=5683)
declare -A MGMT_PORT=([wr1]=15681 [wr2]=15682 [wr3]=15683)
declare -A PROM_PORT=([wr1]=15781 [wr2]=15782 [wr3]=15783)
declare -A DIST_PORT=([wr1]=25681 [wr2]=25682 [wr3]=25683)
# One ssl_options set per node, so the two TLS flavours live on two nodes.
declare -A TLS_PORT=([wr1]=5691 [wr2]=5692)
declare -A TLS_PEER_CERT_REQUIRED=([wr1]=true [wr2]=false)
CLIENT_CN=warren-client # also the user EXTERNAL logs in as (no password)

RMQ_USER=rabbitmq
RMQ_HOME="$(getent passwd "$RMQ_USER" 2>/dev/null | cut -d: -f6 || true)"
RMQ_HOME="${RMQ_HOME:-/var/lib/rabbitmq}"
CLUSTER_DIR="${WARREN_CLUSTER_DIR:-$RMQ_HOME/warren-cluster}"
CERT_DIR="$CLUSTER_DIR/certs"
PYTHON="${PYTHON:-python3}"
BOOT_TIMEOUT="${WARREN_CLUSTER_BOOT_TIMEOUT:-180}"

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

fqdn() { # fqdn NODE: wr1 -> wr1@localhost; refuses anything that is not one of ours
  local n="${1%@*}"
  [[ -n "${AMQP_PORT[$n]:-}" ]] || die "unknown node '$1' (nodes: ${NODES[*]})"
  echo "$n@$NODE_HOST"
}

print_env() {
  local amqp=() mgmt=() names=() n
  for n in "${NODES[@]}"; do
    amqp+=("amqp://guest:guest@127.0.0.1:${AMQP_PORT[$n]}")
    mgmt+=("http://guest:guest@127.0.0.1:${MGMT_PORT[$n]}")
    names+=("$(fqdn "$n")")
  done
  local IFS=,
  echo "export WARREN_CLUSTER_AMQP='${amqp[*]}'"
  echo "export WARREN_CLUSTER_MGMT='${mgmt[*]}'"
  echo "export WARREN_CLUSTER_NODES='${names[*]}'"
  # wr1: a client certificate is required (EXTERNAL or PLAIN); wr2: server-authenticated only.
  echo "export WARREN_CLUSTER_TLS_CLIENT_CERT_URL='amqps://localhost:${TLS_PORT[wr1]}'"
  echo "export WARREN_CLUSTER_TLS_URL='amqps://guest:guest@localhost:${TLS_PORT[wr2]}'"
  # The same TLS listener on 127.0.0.2, an address the server certificate does not name.
  echo "export WARREN_CLUSTER_TLS_WRONG_HOST_URL='amqps://guest:guest@127.0.0.2:${TLS_PORT[wr2]}'"
  echo "export WARREN_CLUSTER_TLS_CLIENT_CN='$CLIENT_CN'"
  echo "export WARREN_CLUSTER_CERT_DIR='$CERT_DIR'"
  echo "export WARREN_CLUSTER_CA='$CERT_DIR/ca.pem'"
  echo "export WARREN_CLUSTER_CLIENT_CERT='$CERT_DIR/client.pem'"
  echo "export WARREN_CLUSTER_CLIENT_KEY='$CERT_DIR/client.key'"
  echo "export WARREN_CLUSTER_WRONG_CA='$CERT_DIR/wrong-ca.pem'"
  echo "export WARREN_CLUSTER_WRONG_CLIENT_CERT='$CERT_DIR/wrong-client.pem'"
  echo "export WARREN_CLUSTER_WRONG_CLIENT_KEY='$CERT_DIR/wrong-client.key'"
}

if [[ "${1:-}" == "--env" || "${1:-}" == "env" ]]; then
  print_env
  exit 0
fi

# --- running things as the rabbitmq user -------------------------------------------------------

RMQ_BIN="${RABBITMQ_BIN_DIR:-/usr/lib/rabbitmq/bin}"

need_tools() { # scripts/setup.sh installs openssl; RabbitMQ is the machine's own
  command -v openssl >/dev/null || die "no openssl: run scripts/setup.sh"
  [[ -x "$RMQ_BIN/rabbitmq-server" ]] || die "no $RMQ_BIN/rabbitmq-server (set RABBITMQ_BIN_DIR)"
}

as_rmq() { # as_rmq CMD...: run as the rabbitmq user, HOME at its home (the Erlang cookie)
  if [[ "$(id -u)" == "$(id -u "$RMQ_USER")" ]]; then
    (cd "$CLUSTER_DIR" 2>/dev/null || cd "$RMQ_HOME"; exec env HOME="$RMQ_HOME" "$@")
  elif [[ "$(id -u)" == 0 ]]; then
    (cd "$CLUSTER_DIR" 2>/dev/null || cd "$RMQ_HOME"; exec runuser -u "$RMQ_USER" -- env HOME="$RMQ_HOME" "$@")
  else
    die "run as root or as $RMQ_USER"
  fi
}

cli() { # cli TOOL NODE ARGS...: a RabbitMQ CLI tool against one of our nodes, never the default one
  local tool="$1" node
  node="$(fqdn "$2")"; shift 2
  as_rmq "$RMQ_BIN/$tool" -q -n "$node" "$@"
}
ctl() { cli rabbitmqctl "$@"; }

node_dir() { echo "$CLUSTER_DIR/$1"; }
pid_file() { echo "$(node_dir "$1")/$1.pid"; }

is_up() { ctl "$1" ping --timeout 5 >/dev/null 2>&1; } # the Erlang VM answers (app may be stopped)

has_line() { # has_line LINE TEXT (no grep -q in a pipe: with pipefail, its early exit fails it)
  [[ $'\n'"$2"$'\n' == *$'\n'"$1"$'\n'* ]]
}

is_beam_of() { # is_beam_of PID NODE: the process was started as that node (its environment says)
  local env
  env="$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null)" || return 1
  has_line "RABBITMQ_NODENAME=$(fqdn "$2")" "$env"
}

beam_pid() { # beam_pid NODE: the node's beam.smp pid, or nothing; checked against its environment
  local n="$1" pid
  pid="$(cat "$(pid_file "$n")" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  # The pid file may be stale: the process must be a beam started for this very node.
  if is_beam_of "$pid" "$n"; then
    echo "$pid"
  fi
}

# --- certificates ------------------------------------------------------------------------------

certs_ok() {
  local f
  for f in ca.pem server.pem server.key client.pem client.key wrong-ca.pem wrong-client.pem wrong-client.key; do
    [[ -s "$CERT_DIR/$f" ]] || return 1
  done
  openssl verify -CAfile "$CERT_DIR/ca.pem" "$CERT_DIR/server.pem" "$CERT_DIR/client.pem" >/dev/null 2>&1 &&
    openssl x509 -noout -checkend 2592000 -in "$CERT_DIR/server.pem" >/dev/null &&
    openssl x509 -noout -checkend 2592000 -in "$CERT_DIR/client.pem" >/dev/null
}

make_certs() {
  if certs_ok; then
    return
  fi
  log "making the test CA and certificates in $CERT_DIR"
  local tmp
  tmp="$(mktemp -d)"
  (
    cd "$tmp"
    days=3650
    ca() { # ca NAME CN
      openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" -keyout "$1.key" -out "$1.pem" \
        -subj "/O=Warren tests/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" 2>/dev/null
    }
    leaf() { # leaf NAME CA CN EXTENSIONS
      openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$1.key" -out "$1.csr" \
        -subj "/O=Warren tests/CN=$3" 2>/dev/null
      printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" "$4" >"$1.ext"
      openssl x509 -req -sha256 -days "$days" -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" \
        -CAcreateserial -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    }
    ca ca "Warren Test CA"
    leaf server ca localhost $'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1'
    leaf client ca "$CLIENT_CN" "extendedKeyUsage=clientAuth"
    ca wrong-ca "Warren Wrong CA"
    leaf wrong-client wrong-ca "$CLIENT_CN" "extendedKeyUsage=clientAuth"
    rm -f ./*.csr ./*.ext ./*.srl
  )
  mkdir -p "$CERT_DIR"
  # Test-only keys: readable by root and the rabbitmq group (the broker reads server.key).
  chmod 0644 "$tmp"/*.pem
  chmod 0640 "$tmp"/*.key
  mv "$tmp"/* "$CERT_DIR/"
  rmdir "$tmp"
  [[ "$(id -u)" == 0 ]] && chown -R "$RMQ_USER:$RMQ_USER" "$CERT_DIR"
  chmod 0755 "$CERT_DIR"
  certs_ok || die "the certificates in $CERT_DIR do not verify"
}

# --- nodes -------------------------------------------------------------------------------------

write_node_files() { # the config, plugins and env files of one node (rewritten at every start)
  local n="$1" d
  d="$(node_dir "$n")"
  mkdir -p "$d/mnesia" "$d/log"
  {
    echo "# Written by scripts/cluster.sh; rewritten at every start."
    echo "listeners.tcp.local = 127.0.0.1:${AMQP_PORT[$n]}"
    echo "management.tcp.ip = 127.0.0.1"
    echo "management.tcp.port = ${MGMT_PORT[$n]}"
    echo "prometheus.tcp.ip = 127.0.0.1"
    echo "prometheus.tcp.port = ${PROM_PORT[$n]}"
    echo "cluster_partition_handling = pause_minority"
    # The default 40% of RAM, times four brokers, is more than the machine has.
    echo "vm_memory_high_watermark.absolute = 2GB"
    # Only a blank node runs peer discovery: it joins the seed as it first boots (when the seed
    # does not answer, it boots alone and scripts/cluster.sh start joins it with join_cluster).
    echo "cluster_formation.peer_discovery_backend = classic_config"
    echo "cluster_formation.classic_config.nodes.1 = $(fqdn "$SEED")"
    echo "log.console = false"
    echo "log.file.level = info"
    if [[ -n "${TLS_PORT[$n]:-}" ]]; then
      echo "listeners.ssl.local = 127.0.0.1:${TLS_PORT[$n]}"
      # Not in the certificate: a client that checks the host name must refuse this address.
      echo "listeners.ssl.wrong_name = 127.0.0.2:${TLS_PORT[$n]}"
      echo "ssl_options.cacertfile = $CERT_DIR/ca.pem"
      echo "ssl_options.certfile = $CERT_DIR/server.pem"
      echo "ssl_options.keyfile = $CERT_DIR/server.key"
      echo "ssl_options.verify = verify_peer"
      echo "ssl_options.fail_if_no_peer_cert = ${TLS_PEER_CERT_REQUIRED[$n]}"
      echo "auth_mechanisms.1 = PLAIN"
      echo "auth_mechanisms.2 = AMQPLAIN"
      echo "auth_mechanisms.3 = EXTERNAL"
      echo "ssl_cert_login_from = common_name"
    fi
  } >"$d/rabbitmq.conf"
  echo "[rabbitmq_management,rabbitmq_prometheus,rabbitmq_auth_mechanism_ssl]." >"$d/enabled_plugins"
  # Our own (empty) env file, so /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost) is
  # not read by these nodes.
  echo "# scripts/cluster.sh: everything is set in the environment" >"$d/rabbitmq-env.conf"
  [[ "$(id -u)" == 0 ]] && chown -R "$RMQ_USER:$RMQ_USER" "$d"
  return 0
}

await_or_relaunch() { # waits for the node; a VM that died while booting is started once more
  local n="$1"
  await_node "$n" && return 0
  if ! is_up "$n"; then
    log "$(fqdn "$n") died while booting; starting it once more"
    launch_node "$n"
    await_node "$n" && return 0
  fi
  die "$(fqdn "$n") did not start"
}

launch_node() { # starts the node's VM in the background (rabbitmq-server -detached)
  local n="$1" d
  d="$(node_dir "$n")"
  write_node_files "$n"
  log "starting $(fqdn "$n") (AMQP :${AMQP_PORT[$n]}${TLS_PORT[$n]:+, TLS :${TLS_PORT[$n]}}, management :${MGMT_PORT[$n]})"
  as_rmq \
    RABBITMQ_NODENAME="$(fqdn "$n")" \
    RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_PID_FILE="$(pid_file "$n")" \
    RABBITMQ_DIST_PORT="${DIST_PORT[$n]}" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    "$RMQ_BIN/rabbitmq-server" -detached >>"$d/log/startup.log" 2>&1
}

await_node() { # waits until the node's rabbit app runs; fails early once its VM is gone
  local n="$1" deadline=$((SECONDS + BOOT_TIMEOUT)) grace=$((SECONDS + 15))
  until ctl "$n" await_startup --timeout 10 >/dev/null 2>&1; do
    if ((SECONDS >= grace)) && [[ -z "$(beam_pid "$n")" ]] && ! is_up "$n"; then
      log "$(fqdn "$n") is not running (its VM exited); its log: $(node_dir "$n")/log/$(fqdn "$n").log"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$(fqdn "$n") did not boot in ${BOOT_TIMEOUT}s; its log: $(node_dir "$n")/log/$(fqdn "$n").log"
      tail -n 20 "$(node_dir "$n")/log/$(fqdn "$n").log" >&2 || true
      return 1
    fi
    sleep 1
  done
}

cluster_json() { # cluster_json NODE: cluster_status as JSON, from that node's point of view
  ctl "$1" cluster_status --formatter json 2>/dev/null
}

json_list() { # json_list KEY: the list KEY of the JSON on stdin, one item a line
  "$PYTHON" -c 'import json, sys; print("\n".join(json.load(sys.stdin).get(sys.argv[1], [])))' "$1"
}

members_of() { # members_of NODE KEY: KEY (disk_nodes, running_nodes) of NODE's cluster_status
  local json
  json="$(cluster_json "$1")" || return 1
  json_list "$2" <<<"$json"
}

running_members() { members_of "$1" running_nodes; } # the running members seen from NODE

all_running() { # all_running NODE: NODE sees every node of ours running
  local running n
  running="$(running_members "$1" 2>/dev/null)" || return 1
  for n in "${NODES[@]}"; do has_line "$(fqdn "$n")" "$running" || return 1; done
}

wait_running_members() { # wait_running_members NODE COUNT SECONDS
  local n="$1" want="$2" deadline=$((SECONDS + $3))
  until [[ "$(running_members "$n" 2>/dev/null | grep -c . || true)" -ge "$want" ]]; do
    if ((SECONDS >= deadline)); then
      log "gave up waiting for $want running nodes (seen from $(fqdn "$n"))"
      return 1
    fi
    sleep 1
  done
}

join_seed() { # makes NODE (running, not a member of the seed's cluster) join the seed
  local n="$1" out
  out="$(node_dir "$n")/log/join.log"
  log "joining $(fqdn "$n") to $(fqdn "$SEED")"
  # The CLI prints feature-flag warnings and "tracked connection table" errors while a node
  # joins (harmless in 3.10): they go to the node's join.log, shown only if a step fails.
  {
    ctl "$n" stop_app &&
      # A node that was in another cluster (e.g. the seed's data was wiped) must forget it first.
      { [[ "$(members_of "$n" disk_nodes | grep -c .)" -le 1 ]] || ctl "$n" reset; } &&
      ctl "$n" join_cluster "$(fqdn "$SEED")" &&
      ctl "$n" start_app
  } >"$out" 2>&1 || { tail -n 30 "$out" >&2; die "$(fqdn "$n") could not join $(fqdn "$SEED") (see $out)"; }
}

mgmt_check() { # mgmt_check [ensure]: via the seed's management API, every node runs clustered,
  # the AMQP and TLS ports answer, and the EXTERNAL user of the client certificate exists (with
  # "ensure": is made, without a password, with full rights on /; users are cluster-wide).
  "$PYTHON" - "${MGMT_PORT[$SEED]}" "$CLIENT_CN" "${#NODES[@]}" "${1:-check}" "${AMQP_PORT[@]}" "${TLS_PORT[@]}" <<'PY' 2>/dev/null
import base64, json, socket, sys, urllib.error, urllib.request
port, user, count, mode, *ports = sys.argv[1:]
auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        "Content-Type": "application/json"}
def api(path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=auth,
                                 data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "PUT")
    data = urllib.request.urlopen(req, timeout=5).read()
    return json.loads(data) if data else None
nodes = api("/api/nodes")
assert len(nodes) == int(count) and all(n.get("running") and not n.get("partitions") for n in nodes), nodes
for p in ports:
    socket.create_connection(("127.0.0.1", int(p)), timeout=2).close()
try:
    api(f"/api/users/{user}")
except urllib.error.HTTPError as e:
    if e.code != 404 or mode != "ensure":
        raise
    print(f"cluster: adding the user {user} (no password: EXTERNAL only) with full rights on /",
          flush=True)
    api(f"/api/users/{user}", {"password_hash": "", "tags": ""})
    api(f"/api/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
PY
}

fast_ok() { certs_ok && mgmt_check; } # all runs as it should: start has nothing to do

heal_partitions() { # restarts every running node outside the largest group of running members
  local n best="" best_count=0 count running
  for n in "${NODES[@]}"; do
    count="$(running_members "$n" 2>/dev/null | grep -c . || true)"
    if ((count > best_count)); then best="$n"; best_count="$count"; fi
  done
  [[ -n "$best" ]] || return 0
  running="$(running_members "$best")"
  for n in "${NODES[@]}"; do
    if ! has_line "$(fqdn "$n")" "$running"; then
      log "$(fqdn "$n") runs apart from $(fqdn "$best")'s side (a partition); restarting it"
      stop_node "$n"
      launch_node "$n"
      await_node "$n" || die "$(fqdn "$n") did not start"
    fi
  done
}

cmd_start() {
  local n disk started=()
  need_tools
  mkdir -p "$CLUSTER_DIR"
  [[ "$(id -u)" == 0 ]] && chown "$RMQ_USER:$RMQ_USER" "$CLUSTER_DIR"
  make_certs
  for n in "${NODES[@]}"; do thaw_if_frozen "$n"; done
  if fast_ok; then
    log "already running: ${NODES[*]} clustered"
    print_urls
    return
  fi
  # A seed without data means a new cluster: the others' data names a cluster that is gone.
  if [[ ! -d "$(node_dir "$SEED")/mnesia/$(fqdn "$SEED")" ]] && ! is_up "$SEED"; then
    for n in "${NODES[@]}"; do
      [[ "$n" == "$SEED" ]] && continue
      if is_up "$n"; then ctl "$n" stop >/dev/null; fi
      rm -rf "$(node_dir "$n")/mnesia"
    done
  fi
  # Start the missing nodes that have data at once (a member that stopped before the others
  # waits, while it boots, for the ones that stopped after it); the blank ones once the seed
  # runs: their peer discovery (classic_config: the seed) then joins them to it as they boot.
  local blank=() n_up
  for n in "${NODES[@]}"; do
    if is_up "$n"; then
      # A VM whose rabbit app was stopped (e.g. an interrupted join) gets it started again.
      n_up="$(ctl "$n" eval 'rabbit:is_booting() orelse rabbit:is_running().' 2>/dev/null || true)"
      [[ "$n_up" == false ]] && { log "starting the rabbit app of $(fqdn "$n")"; ctl "$n" start_app >/dev/null; }
    elif [[ "$n" != "$SEED" && ! -d "$(node_dir "$n")/mnesia/$(fqdn "$n")" ]]; then
      blank+=("$n")
    else
      launch_node "$n"
      started+=("$n")
    fi
  done
  if ((${#blank[@]})); then
    await_node "$SEED" || die "$(fqdn "$SEED") did not start"
    # One at a time: two blank nodes joining at once can race in the feature-flag sync
    # (seen with 3.10.8: incompatible_feature_flags, {badmap,undefined}, and the VM exits).
    for n in "${blank[@]}"; do
      launch_node "$n"
      started+=("$n")
      await_or_relaunch "$n"
    done
  fi
  for n in "${NODES[@]}"; do
    await_or_relaunch "$n"
  done
  for n in "${NODES[@]}"; do
    [[ "$n" == "$SEED" ]] && continue
    disk="$(members_of "$n" disk_nodes)" || die "cluster_status failed on $(fqdn "$n")"
    has_line "$(fqdn "$SEED")" "$disk" || join_seed "$n"
  done
  if ! wait_running_members "$SEED" "${#NODES[@]}" 20 2>/dev/null; then
    heal_partitions
    wait_running_members "$SEED" "${#NODES[@]}" 120
  fi
  # The management API answers a little after the app is up.
  local deadline=$((SECONDS + 60))
  until mgmt_check ensure >&2; do
    ((SECONDS < deadline)) || die "the cluster runs but its management API does not answer on :${MGMT_PORT[$SEED]}"
    sleep 1
  done
  log "running: ${NODES[*]} clustered${started[*]:+ (started ${started[*]})}"
  print_urls
}

print_urls() {
  local n
  for n in "${NODES[@]}"; do
    echo "$(fqdn "$n"): amqp://guest:guest@127.0.0.1:${AMQP_PORT[$n]}  http://127.0.0.1:${MGMT_PORT[$n]}${TLS_PORT[$n]:+  amqps://localhost:${TLS_PORT[$n]}}"
  done
  echo "TLS: amqps://localhost:${TLS_PORT[wr1]} requires a client certificate; amqps://localhost:${TLS_PORT[wr2]} does not; CA $CERT_DIR/ca.pem"
}

await_quorum_plus_one() { # every quorum queue has all but one member online, seen from NODE
  cli rabbitmq-upgrade "$1" await_online_quorum_plus_one --timeout "${2:-120}" >/dev/null
}

stop_node() { # stop_node NODE [careful]: careful waits until stopping it costs no queue its quorum
  local n="$1" pid
  thaw_if_frozen "$n"
  if is_up "$n"; then
    # Waiting helps only while every node runs (members still catching up after a restart).
    if [[ "${2:-}" == careful ]] && all_running "$n" &&
      ! cli rabbitmq-queues "$n" check_if_node_is_quorum_critical >/dev/null 2>&1; then
      log "$(fqdn "$n") is quorum-critical for some quorum queue; waiting for the other members"
      await_quorum_plus_one "$n" 120 || log "still quorum-critical after 120s; stopping $(fqdn "$n") anyway"
    fi
    log "stopping $(fqdn "$n")"
    pid="$(beam_pid "$n")"
    ctl "$n" stop ${pid:+"$(pid_file "$n")"} >/dev/null # with the pid file: waits for the VM to exit
  fi
}

cmd_stop() {
  local n
  if (($#)); then
    fqdn "$1" >/dev/null
    stop_node "${1%@*}" careful
    return
  fi
  # The seed last: it is then the last to stop and boots without waiting for the others.
  for ((i = ${#NODES[@]} - 1; i >= 0; i--)); do
    stop_node "${NODES[$i]}"
  done
  log "stopped: ${NODES[*]}"
}

cmd_status() {
  local n ok=0 seen="" members=""
  for n in "${NODES[@]}"; do
    if ctl "$n" await_startup --timeout 2 >/dev/null 2>&1; then
      echo "$(fqdn "$n"): running (pid $(beam_pid "$n"))"
      [[ -z "$seen" ]] && seen="$n"
    elif is_up "$n"; then
      echo "$(fqdn "$n"): VM up, rabbit app not running: booting, stopped, or paused by pause_minority (pid $(beam_pid "$n"))"
      ok=1
    else
      echo "$(fqdn "$n"): not running"
      ok=1
    fi
  done
  if [[ -z "$seen" ]]; then
    echo "cluster: no node running"
    return 1
  fi
  local json
  json="$(cluster_json "$seen")" || { echo "cluster: cluster_status failed on $(fqdn "$seen")"; return 1; }
  echo "members (seen from $(fqdn "$seen")): $(json_list disk_nodes <<<"$json" | sort | tr '\n' ' ')"
  members="$(json_list running_nodes <<<"$json" | sort | tr '\n' ' ')"
  echo "running members: $members"
  for n in "${NODES[@]}"; do
    [[ " $members " == *" $(fqdn "$n") "* ]] || ok=1
  done
  local partitions
  partitions="$("$PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get("partitions") or "none")' <<<"$json")"
  echo "partitions: $partitions"
  [[ "$partitions" == none ]] || ok=1
  return "$ok"
}

proc_state() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null; } # R, S, T (stopped), Z...

thaw_if_frozen() {
  local pid
  pid="$(beam_pid "$1")"
  if [[ -n "$pid" && "$(proc_state "$pid")" == T ]]; then
    log "$(fqdn "$1") is frozen (SIGSTOP); thawing it first"
    kill -CONT "$pid"
  fi
}

node_arg() { # node_arg ACTION NAME: the short node name (wr1) of a command's argument, or usage
  local n
  n="$(fqdn "${2:?usage: cluster.sh $1 NODE}")"
  echo "${n%@*}"
}

signal_node() { # signal_node STOP|CONT NODE: SIGSTOP is a hung node; its peers notice after
  # net_ticktime (60 s by default). SIGCONT thaws it.
  local pid
  pid="$(beam_pid "$2")"
  [[ -n "$pid" ]] || die "$(fqdn "$2") is not running"
  if [[ "$1" == STOP ]]; then
    log "SIGSTOP $(fqdn "$2") (beam.smp pid $pid); thaw it with: scripts/cluster.sh thaw $2"
  else
    log "SIGCONT $(fqdn "$2") (beam.smp pid $pid)"
  fi
  kill "-$1" "$pid"
}

cmd_kill() {
  local n pid default_pid
  n="$(node_arg kill "${1:-}")"
  pid="$(beam_pid "$n")"
  if [[ -z "$pid" ]] && is_up "$n"; then
    pid="$(ctl "$n" eval 'os:getpid().' | tr -d '"')"
  fi
  [[ -n "$pid" ]] || { log "$(fqdn "$n") is not running"; return 0; }
  default_pid="$(cat "$RMQ_HOME/mnesia/rabbit@localhost.pid" 2>/dev/null || true)"
  [[ "$pid" != "$default_pid" ]] || die "refusing: pid $pid is the default node's"
  is_beam_of "$pid" "$n" ||
    die "refusing: pid $pid is not $(fqdn "$n")'s beam"
  log "SIGKILL $(fqdn "$n") (beam.smp pid $pid)"
  kill -KILL "$pid"
  # Gone, or a zombie its parent (init: the VM detached) has not reaped yet.
  local deadline=$((SECONDS + 10))
  while [[ -e "/proc/$pid" && "$(proc_state "$pid")" != Z ]]; do
    ((SECONDS < deadline)) || die "pid $pid still there 10s after SIGKILL"
    sleep 0.05
  done
}

cmd_restart() {
  local n
  n="$(node_arg restart "${1:-}")"
  need_tools
  make_certs
  stop_node "$n" careful
  launch_node "$n"
  await_node "$n"
  local other="" o
  for o in "${NODES[@]}"; do
    if [[ "$o" != "$n" ]] && is_up "$o"; then other="$o"; break; fi
  done
  if [[ -z "$other" ]]; then
    log "$(fqdn "$n") runs; no other node does (scripts/cluster.sh start brings them back)"
    return
  fi
  local disk
  disk="$(members_of "$n" disk_nodes)" || die "cluster_status failed on $(fqdn "$n")"
  if ! has_line "$(fqdn "$other")" "$disk"; then
    [[ "$n" != "$SEED" ]] || die "$(fqdn "$n") came back outside the cluster; try: cluster.sh wipe; cluster.sh start"
    join_seed "$n"
  fi
  # Running in the cluster: the other node sees it among its running members.
  local deadline=$((SECONDS + 60))
  until has_line "$(fqdn "$n")" "$(running_members "$other" 2>/dev/null || true)"; do
    ((SECONDS < deadline)) || die "$(fqdn "$other") does not see $(fqdn "$n") running after 60s"
    sleep 1
  done
  # Its quorum queue members are back too (they catch up a few seconds after the node runs), so
  # the next node of a rolling restart can go.
  if all_running "$n"; then
    await_quorum_plus_one "$n" 120 || die "quorum queue members on $(fqdn "$n") are not all back after 120s"
    log "$(fqdn "$n") runs in the cluster again, with its quorum queue members"
  else
    log "$(fqdn "$n") runs in the cluster again (not every node runs)"
  fi
}

cmd_wipe() {
  cmd_stop
  local n
  for n in "${NODES[@]}"; do
    rm -rf "$(node_dir "$n")"
  done
  log "wiped the nodes' data under $CLUSTER_DIR (certificates kept in $CERT_DIR)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) shift; cmd_stop "$@" ;;
  status) cmd_status ;;
  kill) cmd_kill "${2:-}" ;;
  freeze) signal_node STOP "$(node_arg freeze "${2:-}")" ;;
  thaw) signal_node CONT "$(node_arg thaw "${2:-}")" ;;
  restart) cmd_restart "${2:-}" ;;
  wipe) cmd_wipe ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
