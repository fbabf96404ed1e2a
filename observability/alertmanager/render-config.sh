#!/bin/sh
# Render alertmanager.yml with the chat integrations enabled from the environment, then
# start Alertmanager on the rendered copy. POSIX sh: runs on the busybox shell of the
# prom/alertmanager image and on dash/bash.
#
# Compose (the image's own CMD is replaced by `command`; a --config.file flag passed by
# mistake is dropped, the rendered file always wins):
#   alertmanager:
#     image: prom/alertmanager:v0.34.1
#     entrypoint: ["/bin/sh", "/etc/alertmanager/render-config.sh"]
#     command: ["--storage.path=/alertmanager", "--web.listen-address=:9093"]
#     environment:
#       SLACK_WEBHOOK_URL: ${SLACK_WEBHOOK_URL:-}
#       TELEGRAM_BOT_TOKEN: ${TELEGRAM_BOT_TOKEN:-}
#       TELEGRAM_CHAT_ID: ${TELEGRAM_CHAT_ID:-}
#     volumes:
#       - ./observability/alertmanager:/etc/alertmanager:ro
#
# Environment:
#   SLACK_WEBHOOK_URL   Slack incoming-webhook URL (https://hooks.slack.com/services/...).
#                       Enables Slack for `page` and `ticket` alerts.
#   TELEGRAM_BOT_TOKEN  Bot token from @BotFather (digits:letters).
#   TELEGRAM_CHAT_ID    Numeric chat id (negative for groups). Both Telegram variables
#                       enable Telegram for `page` alerts; setting only one is an error.
#   ALERTMANAGER_CONFIG_TEMPLATE  source file      (default /etc/alertmanager/alertmanager.yml)
#   ALERTMANAGER_RENDER_DIR       output directory (default /tmp/alertmanager)
#   ALERTMANAGER_BIN              binary           (default /bin/alertmanager)
#
# `render-config.sh --render-only` renders, prints the rendered file's path and exits
# (used by tests/config/test_observability_config.py).
# Changing .env needs a container restart: a reload (SIGHUP, /-/reload) re-reads the
# rendered copy, it does not render again.
set -eu

template=${ALERTMANAGER_CONFIG_TEMPLATE:-/etc/alertmanager/alertmanager.yml}
render_dir=${ALERTMANAGER_RENDER_DIR:-/tmp/alertmanager}
binary=${ALERTMANAGER_BIN:-/bin/alertmanager}

die() {
    echo "render-config.sh: $*" >&2
    exit 64
}

# The values below end up in sed replacements delimited by `|`: refuse what could break them.
case "$render_dir" in
    *'|'* | *'&'* | *'\'*) die "ALERTMANAGER_RENDER_DIR contains | & or \\" ;;
esac

umask 077
mkdir -p "$render_dir"

sed_script="s|__RENDER_DIR__|$render_dir|g"

if [ -n "${SLACK_WEBHOOK_URL:-}" ]; then
    case "$SLACK_WEBHOOK_URL" in
        https://*) ;;
        *) die "SLACK_WEBHOOK_URL must be an https:// URL" ;;
    esac
    # Read by Alertmanager through `api_url_file`: the URL never appears in the config.
    printf '%s' "$SLACK_WEBHOOK_URL" >"$render_dir/slack_api_url"
    sed_script="$sed_script
s|#@slack ||"
    echo "render-config.sh: Slack enabled (page, ticket)" >&2
fi

if [ -n "${TELEGRAM_BOT_TOKEN:-}" ] || [ -n "${TELEGRAM_CHAT_ID:-}" ]; then
    if [ -z "${TELEGRAM_BOT_TOKEN:-}" ] || [ -z "${TELEGRAM_CHAT_ID:-}" ]; then
        die "set both TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID, or neither"
    fi
    case "$TELEGRAM_BOT_TOKEN" in
        *[!0-9A-Za-z:_-]*) die "TELEGRAM_BOT_TOKEN has characters other than [0-9A-Za-z:_-]" ;;
    esac
    chat_id_digits=${TELEGRAM_CHAT_ID#-}
    case "$chat_id_digits" in
        '' | *[!0-9]*) die "TELEGRAM_CHAT_ID must be an integer" ;;
    esac
    sed_script="$sed_script
s|#@telegram ||
s|__TELEGRAM_BOT_TOKEN__|$TELEGRAM_BOT_TOKEN|
s|__TELEGRAM_CHAT_ID__|$TELEGRAM_CHAT_ID|"
    echo "render-config.sh: Telegram enabled (page)" >&2
fi

rendered="$render_dir/alertmanager.yml"
sed -e "$sed_script" "$template" >"$rendered.tmp"
mv "$rendered.tmp" "$rendered"

if [ "${1:-}" = "--render-only" ]; then
    echo "$rendered"
    exit 0
fi

# Drop any --config.file given on the command line (e.g. the image's default CMD).
for arg do
    shift
    case "$arg" in
        --config.file=*) continue ;;
    esac
    set -- "$@" "$arg"
done

exec "$binary" --config.file="$rendered" "$@"
