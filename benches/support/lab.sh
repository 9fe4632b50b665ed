# Sourced by the benchmark scripts: two network namespaces joined by a veth pair.
#   lab_up PREFIX SERVER_CIDR CLIENT_CIDR
# sets $srv $cli (namespaces) and $sif $cif (their interfaces), brings everything up;
# lab_down deletes both namespaces (and with them the veth pair).
srv=; cli=; sif=; cif=
lab_up() {
    local tag=$1$$
    srv=cf$tag-s; cli=cf$tag-c; sif=${1:0:3}s$$; cif=${1:0:3}c$$
    ip netns add "$srv"; ip netns add "$cli"
    ip link add "$sif" type veth peer name "$cif"
    ip link set "$sif" netns "$srv"; ip link set "$cif" netns "$cli"
    ip -n "$srv" addr add "$2" dev "$sif"; ip -n "$cli" addr add "$3" dev "$cif"
    local pair
    for pair in "$srv $sif" "$cli $cif"; do
        set -- $pair
        ip -n "$1" link set "$2" up; ip -n "$1" link set lo up
    done
}

lab_down() {
    ip netns del "$cli" 2>/dev/null || true
    ip netns del "$srv" 2>/dev/null || true
}
