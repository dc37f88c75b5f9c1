#!/bin/sh
# The guest's /init (cargo xtask vm-test): a lab without Docker, then galmanhae, one scenario
# at a time; every result is printed between markers for the host to check. Addresses are the
# lab's: 198.18.0.0/15 only.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns
export PATH=/sbin:/bin
# busybox's shell prefers its own applets to files on PATH; the lab needs iproute2's ip and tc.
ip() { /bin/ip "$@"; }
tc() { /sbin/tc "$@"; }
mount -t tracefs nodev /sys/kernel/tracing
section() { echo "=== BEGIN $1"; shift; "$@" 2>&1; echo "=== END rc=$?"; }
fact() { echo "=== FACT $1=$2"; }
fact kernel "$(cat /proc/sys/kernel/osrelease)"
section modprobe sh -c 'for m in $GUEST_MODULES; do modprobe $m || echo "modprobe $m failed"; done'
section tracepoint-format cat /sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format
ip link set lo up
echo 1 > /proc/sys/net/ipv4/ip_forward

# "app" (the culprit of each scenario) and "web" (healthy) stand for containers behind a
# bridge with MASQUERADE; "db" is routed from the host, as in the 6.18 lab.
ip link add br0 type bridge && ip addr add 198.18.100.1/24 dev br0 && ip link set br0 up
n=2
for ns in app web; do
    ip netns add $ns
    ip link add $ns-host type veth peer name eth0 netns $ns
    ip link set $ns-host master br0 up
    ip -n $ns addr add 198.18.100.$n/24 dev eth0
    ip -n $ns link set eth0 up
    ip -n $ns link set lo up
    ip -n $ns route add default via 198.18.100.1
    n=$((n + 1))
done
ip netns add db
ip link add gmh-db-host type veth peer name eth0 netns db
ip addr add 198.19.0.1/24 dev gmh-db-host && ip link set gmh-db-host up
ip -n db addr add 198.19.0.2/24 dev eth0 && ip -n db link set eth0 up && ip -n db link set lo up
ip -n db route add default via 198.19.0.1
section nat iptables -t nat -A POSTROUTING -s 198.18.100.0/24 ! -o br0 -j MASQUERADE
ip netns exec db socat -u TCP-LISTEN:5432,fork,reuseaddr OPEN:/dev/null &
sleep 1

in_ns() { local target=$1; shift; ip netns exec "$target" "$@"; }
send() { head -c "$2" /dev/zero | in_ns "$1" timeout "$3" socat -u STDIN TCP:198.19.0.2:"$4"; }
wait_for() { i=0; until grep -q "$1" "$2" 2>/dev/null || [ $i -ge 300 ]; do sleep 0.1; i=$((i + 1)); done; }
snmp() { in_ns "$1" cat /proc/net/snmp | grep '^Tcp:'; }
conntrack_count() { cat /proc/sys/net/netfilter/nf_conntrack_count; }

# observe NAME: galmanhae diagnose while traffic_NAME runs; its report in section report-NAME.
observe() {
    galmanhae diagnose --json --duration 120s --top 1000 > /tmp/$1.json 2> /tmp/$1.err &
    agent=$!
    wait_for attached /tmp/$1.err
    section conntrack-count-before-$1 conntrack_count
    traffic_$1
    sleep 1
    section conntrack-count-after-$1 conntrack_count
    kill -INT $agent
    wait $agent
    fact diagnose-exit-$1 $?
    section diagnose-stderr-$1 cat /tmp/$1.err
    section report-$1 cat /tmp/$1.json
}

# Random loss of app's segments in the host's FORWARD path: local drops, exact counts.
traffic_loss() {
    pids=
    for ns in app web; do send $ns "$GUEST_BYTES" 60 5432 & pids="$pids $!"; done
    wait $pids
}
section loss iptables -A FORWARD -s 198.18.100.2 -m statistic --mode random --probability 0.05 -j DROP
section snmp-before-app snmp app
section snmp-before-web snmp web
observe loss
section snmp-after-app snmp app
section snmp-after-web snmp web
section iptables-drops iptables -L FORWARD -v -x -n
iptables -F FORWARD

# A path MTU black hole: egress MTU 1280 towards the db, the host's ICMP frag-needed dropped.
# web already uses an MTU that fits (what the advice says to do).
traffic_pmtu() {
    send app 2000000 6 5432 & big=$!
    send web 200000 6 5432
    wait $big
}
section pmtu sh -c '/bin/ip link set gmh-db-host mtu 1280 && /bin/ip -n web link set eth0 mtu 1200 &&
    iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP'
observe pmtu
ip link set gmh-db-host mtu 1500
iptables -F OUTPUT

# A SYN black hole at the far end: app's connections to port 5433 never set up.
traffic_syn() {
    send app 1 4 5433 & first=$!
    send app 1 4 5433 & second=$!
    send web 100 4 5432
    wait $first $second
}
section syn in_ns db iptables -A INPUT -p tcp --dport 5433 --syn -j DROP
observe syn

# A conntrack table with room for 3 more entries: web's stream is set up before, app's
# thirty new connections find no room.
(while true; do echo x; sleep 1; done) | in_ns web socat -u STDIN TCP:198.19.0.2:5432 &
stream=$!
sleep 2
traffic_conntrack() {
    pids=
    for i in $(seq 30); do
        sleep 6 | in_ns app timeout 7 socat -u STDIN TCP:198.19.0.2:5432 &
        pids="$pids $!"
    done
    wait $pids
}
section conntrack sh -c 'echo $(( $(cat /proc/sys/net/netfilter/nf_conntrack_count) + 3 )) \
    > /proc/sys/net/netfilter/nf_conntrack_max'
observe conntrack
kill $stream
echo 262144 > /proc/sys/net/netfilter/nf_conntrack_max

# The daemon: /metrics while it runs, a clean exit on SIGTERM, nothing left in the kernel.
section bpf-before bpftool prog show
iptables -A FORWARD -s 198.18.100.2 -m statistic --mode random --probability 0.05 -j DROP
galmanhae --log-level info run --listen 127.0.0.1:9464 2> /tmp/run.err &
daemon=$!
wait_for serving /tmp/run.err
section run-snmp-before snmp app
send app 1000000 30 5432
sleep 1
section run-snmp-after snmp app
section bpf-during bpftool prog show
section tc-during tc filter show dev gmh-db-host egress
# A new series is served at zero first and with its count from the next scrape on (so that
# rate() sees a one-off burst): the second scrape is the one checked.
section metrics-first wget -q -O - http://127.0.0.1:9464/metrics
sleep 2
section metrics wget -q -O - http://127.0.0.1:9464/metrics
kill -TERM $daemon
wait $daemon
fact run-exit $?
section run-stderr cat /tmp/run.err
section bpf-after bpftool prog show
section tc-after tc filter show dev gmh-db-host egress
section qdisc-after tc qdisc show dev gmh-db-host
echo "=== DONE"
poweroff -f
