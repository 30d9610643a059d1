# Sourced by the README commands: installs missing system tools through apt-get.
#
#   ensure_tools protoc            # what the build needs (etcd-client compiles .proto files)
#   ensure_tools protoc redis-server redis-cli etcd   # what the tests need

# binary -> Debian package
declare -A JUPITER_PKG=(
    [protoc]=protobuf-compiler
    # protoc's well-known types (google/protobuf/*.proto): a recommendation of
    # protobuf-compiler, so --no-install-recommends leaves them out; etcd-client needs them.
    [protoc-include]=libprotobuf-dev
    [redis-server]=redis-server
    [redis-cli]=redis-tools
    [redis-benchmark]=redis-tools
    [etcd]=etcd-server
    [etcdctl]=etcd-client
)

# Whether a tool (or, for protoc-include, protoc's well-known .proto files) is present.
have() {
    case "$1" in
        protoc-include) [ -f /usr/include/google/protobuf/descriptor.proto ] ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}

ensure_tools() {
    local missing=() bin pkg
    for bin in "$@"; do
        if ! have "$bin"; then
            pkg=${JUPITER_PKG[$bin]:?no package known for $bin}
            [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
        fi
        if [ "$bin" = protoc ] && ! have protoc-include; then
            missing+=("${JUPITER_PKG[protoc-include]}")
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
        have "$bin" || { echo "error: $bin still missing after installing ${missing[*]}" >&2; return 1; }
        if [ "$bin" = protoc ] && ! have protoc-include; then
            echo "error: google/protobuf/descriptor.proto still missing after installing ${missing[*]}" >&2
            return 1
        fi
    done
}
