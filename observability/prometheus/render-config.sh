#!/bin/sh
# Write the settings of the environment that the rules read into a copy of this directory's
# prometheus.yml and rules/, then start Prometheus on that copy. POSIX sh: runs on the busybox
# shell of the prom/prometheus image and on dash/bash. Compose and the native twin both start
# Prometheus through it, so a setting means the same in both.
#
# Prometheus never reads environment variables in rule files. A rule whose number a user may
# change carries the name of its variable in a trailing comment, e.g. in rules/thresholds.yml:
#         expr: vector(100)  # env: POSTGRES_TPS_THRESHOLD
# When that variable is set (and not empty), the copy gets its value instead of the default
# written in the file; every other byte is copied as is.
#
# Compose:
#   prometheus:
#     image: prom/prometheus:v3.13.3
#     entrypoint: ["/bin/sh", "/etc/prometheus/render-config.sh"]
#     command: ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
#     environment:
#       POSTGRES_TPS_THRESHOLD: ${POSTGRES_TPS_THRESHOLD:-}
#
# Environment:
#   POSTGRES_TPS_THRESHOLD  transactions per second of the messages database above which
#                           HighPostgresTPS fires (a number above 0; default in
#                           rules/thresholds.yml)
#   PROMETHEUS_RENDER_DIR   output directory (default /tmp/prometheus)
#   PROMETHEUS_BIN          binary           (default /bin/prometheus)
#
# --config.file=<file> names the source (default /etc/prometheus/prometheus.yml); Prometheus is
# given the rendered copy instead. `render-config.sh --render-only [--config.file=<file>]`
# renders, prints the rendered prometheus.yml's path and exits (tests/config uses it).
# Changing a setting needs a restart: a reload (SIGHUP) re-reads the rendered copy, it does not
# render again.
set -eu

render_dir=${PROMETHEUS_RENDER_DIR:-/tmp/prometheus}
binary=${PROMETHEUS_BIN:-/bin/prometheus}
source_config=/etc/prometheus/prometheus.yml
render_only=false

die() {
    echo "render-config.sh: $*" >&2
    exit 64
}

for arg do
    case "$arg" in
        --config.file=*) source_config=${arg#--config.file=} ;;
        --render-only) render_only=true ;;
    esac
done
source_dir=$(dirname "$source_config")
[ -f "$source_config" ] || die "no such file: $source_config"
[ -d "$source_dir/rules" ] || die "no rules/ directory next to $source_config"

# Numbers only: the value is written into PromQL, and a sed replacement must not see | or &.
setting() {
    name=$1
    eval "value=\${$name:-}"
    [ -n "$value" ] || return 0
    case "$value" in
        *[!0-9.]* | .* | *. | *.*.*) die "$name must be a number such as 100 or 12.5, not '$value'" ;;
    esac
    case "$value" in
        *[1-9]*) ;;
        *) die "$name must be above 0" ;;
    esac
    sed_script="$sed_script
s|^\\(.*vector(\\)[0-9.]*\\()  # env: $name\\)\$|\\1$value\\2|"
    expected="$expected $name=$value"
}
sed_script=""
expected=""
setting POSTGRES_TPS_THRESHOLD

umask 077
rm -rf "$render_dir/rules"
mkdir -p "$render_dir/rules"
cp "$source_config" "$render_dir/prometheus.yml"
for rule_file in "$source_dir"/rules/*.yml; do
    target="$render_dir/rules/$(basename "$rule_file")"
    if [ -n "$sed_script" ]; then
        sed -e "$sed_script" "$rule_file" >"$target"
    else
        cp "$rule_file" "$target"
    fi
done

# A renamed or reworded marker would silently leave the default in place: refuse instead.
for pair in $expected; do
    name=${pair%%=*}
    value=${pair#*=}
    grep -q "vector($value)  # env: $name\$" "$render_dir"/rules/*.yml ||
        die "no rule line ends in '# env: $name' (see rules/thresholds.yml)"
    echo "render-config.sh: $name=$value" >&2
done

rendered="$render_dir/prometheus.yml"
if [ "$render_only" = true ]; then
    echo "$rendered"
    exit 0
fi

# The source's --config.file becomes the rendered copy's.
for arg do
    shift
    case "$arg" in
        --config.file=*) continue ;;
    esac
    set -- "$@" "$arg"
done

exec "$binary" --config.file="$rendered" "$@"
