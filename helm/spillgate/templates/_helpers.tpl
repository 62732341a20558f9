{{/*
Names. Kubernetes names are DNS labels: 63 characters at most, so every name is truncated.
*/}}
{{- define "spillgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "spillgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Full name of one component: (dict "root" $ "component" "engine"); still 63 chars max. */}}
{{- define "spillgate.componentName" -}}
{{- $max := sub 62 (len .component) | int -}}
{{- printf "%s-%s" (include "spillgate.fullname" .root | trunc $max | trimSuffix "-") .component -}}
{{- end -}}

{{- define "spillgate.gateway.fullname" -}}
{{- include "spillgate.componentName" (dict "root" . "component" "gateway") -}}
{{- end -}}

{{- define "spillgate.engine.fullname" -}}
{{- include "spillgate.componentName" (dict "root" . "component" "engine") -}}
{{- end -}}

{{- define "spillgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "spillgate.labels" -}}
helm.sh/chart: {{ include "spillgate.chart" . }}
{{ include "spillgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "spillgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spillgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Component labels and selectors: (dict "root" $ "component" "gateway"). */}}
{{- define "spillgate.componentLabels" -}}
{{ include "spillgate.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "spillgate.componentSelectorLabels" -}}
{{ include "spillgate.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "spillgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "spillgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Image reference, bitnami style: (dict "image" .Values.image "root" $).
registry/repository:tag, or registry/repository@digest when a digest is set.
The tag defaults to "<appVersion>-gpu".
*/}}
{{- define "spillgate.image" -}}
{{- $registry := .image.registry | default "" -}}
{{- $repository := .image.repository -}}
{{- $tag := .image.tag | default (printf "%s-gpu" .root.Chart.AppVersion) | toString -}}
{{- $ref := $repository -}}
{{- if $registry -}}
{{- $ref = printf "%s/%s" $registry $repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref $tag -}}
{{- end -}}
{{- end -}}

{{/* The engine image: engine.image fields that are set, the top-level image for the rest. */}}
{{- define "spillgate.engine.imageValues" -}}
{{- $own := dict -}}
{{- range $key, $value := .Values.engine.image -}}
{{- if $value -}}
{{- $_ := set $own $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml (merge $own (deepCopy .Values.image)) -}}
{{- end -}}

{{/* Name of the Secret holding client, admin and provider keys (keys = env var names). */}}
{{- define "spillgate.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.secrets.dev.create -}}
{{- include "spillgate.componentName" (dict "root" . "component" "dev") -}}
{{- else -}}
{{- fail "secrets.existingSecret is required: create a Secret whose keys are the env var names of the client keys (SPILLGATE_API_KEYS), the admin key and each provider key (see docs/deployment.md); for a throwaway dev install only, set secrets.dev.create=true and secrets.dev.values" -}}
{{- end -}}
{{- end -}}

{{/* The DSN env var, when a PostgreSQL DSN reaches the pod through a Secret. */}}
{{- define "spillgate.dsnEnv" -}}
{{- dig "ledger" "dsn_env" "" .Values.config | default "" -}}
{{- end -}}

{{/* "true" when the ledger is PostgreSQL (a DSN Secret, a dev DSN value, or a literal DSN). */}}
{{- define "spillgate.ledgerIsPostgres" -}}
{{- $dsn := dig "ledger" "dsn" "" .Values.config | default "" | toString -}}
{{- $dsnEnv := include "spillgate.dsnEnv" . -}}
{{- $devDsn := and .Values.secrets.dev.create $dsnEnv (hasKey .Values.secrets.dev.values $dsnEnv) -}}
{{- if or .Values.ledger.existingSecret (hasPrefix "postgresql" $dsn) $devDsn -}}
true
{{- end -}}
{{- end -}}

{{/* The engine Service URL the gateway attaches to (OpenAI base URL, ends in /v1). */}}
{{- define "spillgate.engine.baseUrl" -}}
{{- printf "http://%s.%s.svc:%d/v1" (include "spillgate.engine.fullname" .) .Release.Namespace (int .Values.engine.service.port) -}}
{{- end -}}

{{/* The engine as a node-config `local` entry: attached, one replica per pod address. */}}
{{- define "spillgate.engine.localEntry" -}}
{{- $engine := dict "name" .Values.engine.backendName "model" .Values.engine.model "engine" "vllm" "base_urls" (list (include "spillgate.engine.baseUrl" .)) "resolve_dns" true "dns_refresh_s" .Values.engine.service.dnsRefreshSeconds -}}
{{- if .Values.engine.maxNumSeqs -}}
{{- $_ := set $engine "max_batch" (int .Values.engine.maxNumSeqs) -}}
{{- end -}}
{{- toYaml $engine -}}
{{- end -}}

{{/*
The node config written to the ConfigMap: values.config, plus what the chart owns:
server.host 0.0.0.0, server.port = gateway.port, the engine appended to `local`, and the DCGM
exporter as the GPU telemetry source (gpuTelemetry).
*/}}
{{- define "spillgate.nodeConfig" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $server := merge (dict "host" "0.0.0.0" "port" (int .Values.gateway.port)) (get $cfg "server" | default dict) -}}
{{- $_ := set $cfg "server" $server -}}
{{- /* Every gateway pod of a release serves the same engines: one pool, booked once. */ -}}
{{- $cost := merge (get $cfg "cost" | default dict) (dict "pool" (include "spillgate.fullname" .)) -}}
{{- $_ := set $cfg "cost" $cost -}}
{{- $local := get $cfg "local" | default list -}}
{{- if .Values.engine.enabled -}}
{{- $local = append $local (include "spillgate.engine.localEntry" . | fromYaml) -}}
{{- if eq .Values.gpuTelemetry.source "dcgm" -}}
{{- $telemetry := merge (dict "dcgm_url" .Values.gpuTelemetry.dcgmExporter.url "dcgm_pod_prefix" (printf "%s-" (include "spillgate.engine.fullname" .)) "dcgm_namespace" .Release.Namespace) (get $cfg "telemetry" | default dict) -}}
{{- $_ := set $cfg "telemetry" $telemetry -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "local" $local -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
Checks that must hold before anything renders; included by the gateway Deployment.
*/}}
{{- define "spillgate.validate" -}}
{{- $replicated := or (gt (int .Values.gateway.replicas) 1) .Values.gateway.autoscaling.enabled -}}
{{- if and $replicated (not (include "spillgate.ledgerIsPostgres" .)) -}}
{{- fail (printf "gateway.replicas=%v / gateway.autoscaling.enabled=%v: several gateway replicas need a shared PostgreSQL ledger, but the DSN is SQLite (%s), which is per pod. Set ledger.existingSecret to a Secret holding a postgresql+asyncpg:// DSN (key ledger.existingSecretKey), or use one replica." (.Values.gateway.replicas | toString) (.Values.gateway.autoscaling.enabled | toString) (dig "ledger" "dsn" "" .Values.config)) -}}
{{- end -}}
{{- if and .Values.ledger.existingSecret (not (include "spillgate.dsnEnv" .)) -}}
{{- fail "ledger.existingSecret is set but config.ledger.dsn_env is empty: name the env var that carries the DSN (e.g. SPILLGATE_LEDGER_DSN)" -}}
{{- end -}}
{{- if not (dig "server" "api_keys_env" "" .Values.config) -}}
{{- fail "config.server.api_keys_env is required: the gateway binds 0.0.0.0 in a pod, which the node allows only with client keys" -}}
{{- end -}}
{{- $names := list -}}
{{- range (get .Values.config "local" | default list) -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- range .Values.engine.extraArgs -}}
{{- if hasPrefix "--max-num-seqs" (toString .) -}}
{{- fail "engine.extraArgs sets --max-num-seqs: set engine.maxNumSeqs instead, so the gateway sizes the engine's slots from the same number" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.engine.enabled (has .Values.engine.backendName $names) -}}
{{- fail (printf "engine.backendName %q is also a config.local[].name: pick another name" .Values.engine.backendName) -}}
{{- end -}}
{{- end -}}
