# Sourced by the README commands: installs missing system tools through apt-get.
#
#   ensure_tools protoc            # what the build needs (etcd-client compiles .proto files)
#   ensure_tools protoc redis-server redis-cli etcd   # what the tests need

# binary -> Debian package
declare -A JUPITER_PKG=(
    [protoc]=protobuf-compiler
    [redis-server]=redis-server
    [redis-cli]=redis-tools
    [redis-benchmark]=redis-tools
    [etcd]=etcd-server
    [etcdctl]=etcd-client
)

ensure_tools() {
    local missing=() bin pkg
    for bin in "$@"; do
        if ! command -v "$bin" >/dev/null 2>&1; then
            pkg=${JUPITER_PKG[$bin]:?no package known for $bin}
            [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    echo "installing missing tools: ${missing[*]}" >&2
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "error: need root or sudo to run: apt-get install -y ${missing[*]}" >&2
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: apt-get not found; install these packages by hand: ${missing[*]}" >&2
        return 1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    for bin in "$@"; do
        command -v "$bin" >/dev/null 2>&1 || { echo "error: $bin still missing after installing ${missing[*]}" >&2; return 1; }
    done
}
