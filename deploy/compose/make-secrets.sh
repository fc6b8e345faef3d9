#!/bin/sh
# Makes the secret files docker-compose.yml mounts, once: a random Valkey password, the Redis
# URL that carries it (what RAG_REDIS_URL_FILE names), Grafana's admin password, and an
# API key for machines.
# Existing files are kept. Usage: deploy/compose/make-secrets.sh [folder, default ./secrets]
set -eu
dir=${1:-secrets}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"  # yours only; the files inside must be readable by the containers' users
random() { LC_ALL=C tr -dc 'a-f0-9' </dev/urandom | head -c 40; }
write() {  # name value: a file of that value, no newline, unless it exists
    if [ ! -e "$dir/$1" ]; then
        printf '%s' "$2" >"$dir/$1"
        chmod 644 "$dir/$1"
        echo "made $dir/$1"
    fi
}
write valkey_password "$(random)"
write redis_url "redis://:$(cat "$dir/valkey_password")@valkey:6379/0"
write grafana_admin_password "$(random)"
# An API key for machines that read /stats or /metrics (KEDA's metrics-api, Prometheus): the
# api_keys file (RAG_API_KEYS_FILE, one name=secret a line) starts with it; add your users'.
write keda_api_key "$(random)"
write api_keys "metrics=$(cat "$dir/keda_api_key")
"
# An admin key for Prometheus: the API's /metrics wants one when the API has keys.
write prometheus_api_key "$(random)"
write admin_keys "prometheus=$(cat "$dir/prometheus_api_key")"
