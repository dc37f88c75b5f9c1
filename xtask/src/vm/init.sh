#!/bin/sh
# The guest's /init (cargo xtask vm-test): a lab without Docker, then galmanhae; every result is
# printed between markers for the host to check. Addresses are the lab's: 198.18.0.0/15 only.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns
export PATH=/sbin:/bin
# busybox's shell prefers its own applets to files on PATH; the lab needs iproute2's ip.
ip() { /bin/ip "$@"; }
mount -t tracefs nodev /sys/kernel/tracing
section() { echo "=== BEGIN $1"; shift; "$@" 2>&1; echo "=== END rc=$?"; }
fact() { echo "=== FACT $1=$2"; }
fact kernel "$(cat /proc/sys/kernel/osrelease)"
section modprobe sh -c 'for m in $GUEST_MODULES; do modprobe $m || echo "modprobe $m failed"; done'
section tracepoint-format cat /sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format
ip link set lo up
echo 1 > /proc/sys/net/ipv4/ip_forward

# "app" (lossy) and "web" (healthy) stand for containers behind a bridge with MASQUERADE;
# "db" is routed from the host, as in the 6.18 lab.
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
section loss iptables -A FORWARD -s 198.18.100.2 -m statistic --mode random --probability 0.05 -j DROP
ip netns exec db socat -u TCP-LISTEN:5432,fork,reuseaddr OPEN:/dev/null &
sleep 1

snmp() { ip netns exec "$1" cat /proc/net/snmp | grep '^Tcp:'; }
section snmp-before-app snmp app
section snmp-before-web snmp web
galmanhae diagnose --json --duration 120s --top 1000 > /tmp/report.json 2> /tmp/diagnose.err &
agent=$!
i=0
until grep -q attached /tmp/diagnose.err 2>/dev/null || [ $i -ge 300 ]; do sleep 0.1; i=$((i + 1)); done
pids=
for ns in app web; do
    ip netns exec $ns sh -c "head -c $GUEST_BYTES /dev/zero | socat -u STDIN TCP:198.19.0.2:5432" &
    pids="$pids $!"
done
wait $pids
sleep 1
kill -INT $agent
wait $agent
fact diagnose-exit $?
section snmp-after-app snmp app
section snmp-after-web snmp web
section diagnose-stderr cat /tmp/diagnose.err
section report cat /tmp/report.json
section iptables-drops iptables -L FORWARD -v -x -n
echo "=== DONE"
poweroff -f
