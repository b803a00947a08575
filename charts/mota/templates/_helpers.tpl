{{/*
Names and labels.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "mota.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else RELEASE-mota (RELEASE alone when
it already contains the chart name). 52 characters at most, so that the StatefulSet's pod
names (plus "-NN") and the hook Job's name (plus "-migrate") stay within 63.
*/}}
{{- define "mota.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "mota.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource but its component. */}}
{{- define "mota.commonLabels" -}}
helm.sh/chart: {{ include "mota.chart" . }}
app.kubernetes.io/name: {{ include "mota.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: mota
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the backend's resources. */}}
{{- define "mota.labels" -}}
{{ include "mota.commonLabels" . }}
app.kubernetes.io/component: backend
{{- end }}

{{/*
Labels that select the backend pods (never change them on upgrade). The component keeps
the migration Job's pod out of the Service, the spread and the disruption budget.
*/}}
{{- define "mota.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mota.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: backend
{{- end }}

{{/* The ServiceAccount the backend pods run as. */}}
{{- define "mota.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mota.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "mota.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: `latest` is refused; pin a version (default: the chart's appVersion) or set image.digest" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Replicas that run at least: replicaCount, or the autoscaler's minimum. */}}
{{- define "mota.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.minReplicas }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* The Secret that holds the generated MQTT share group prefix (mqtt.shareGroup unset). */}}
{{- define "mota.shareGroupSecretName" -}}
{{- printf "%s-share-group" (include "mota.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of each replica's MQTT client id (the pod name follows). */}}
{{- define "mota.clientIdPrefix" -}}
{{- default (printf "%s-" .Release.Namespace) .Values.mqtt.clientIdPrefix }}
{{- end }}

{{/*
Secret sources. Each returns YAML (name and keys) or nothing; an existingSecret wins over
the development Secret.
*/}}

{{- define "mota.devSecretName" -}}
{{- printf "%s-dev" (include "mota.fullname" .) }}
{{- end }}

{{- define "mota.databaseSecret" -}}
{{- if .Values.database.existingSecret }}
name: {{ .Values.database.existingSecret }}
key: {{ .Values.database.urlKey }}
dev: false
{{- else if and .Values.devSecret.create .Values.devSecret.databaseUrl }}
name: {{ include "mota.devSecretName" . }}
key: database-url
dev: true
{{- end }}
{{- end }}

{{- define "mota.s3Secret" -}}
{{- if .Values.s3.existingSecret }}
name: {{ .Values.s3.existingSecret }}
idKey: {{ .Values.s3.accessKeyIdKey }}
secretKey: {{ .Values.s3.secretAccessKeyKey }}
{{- else if and .Values.devSecret.create .Values.devSecret.s3AccessKeyId }}
name: {{ include "mota.devSecretName" . }}
idKey: s3-access-key-id
secretKey: s3-secret-access-key
{{- end }}
{{- end }}

{{- define "mota.mqttAuthSecret" -}}
{{- if .Values.mqtt.auth.existingSecret }}
name: {{ .Values.mqtt.auth.existingSecret }}
usernameKey: {{ .Values.mqtt.auth.usernameKey }}
passwordKey: {{ .Values.mqtt.auth.passwordKey }}
{{- else if and .Values.devSecret.create .Values.devSecret.mqttUsername }}
name: {{ include "mota.devSecretName" . }}
usernameKey: mqtt-username
passwordKey: mqtt-password
{{- end }}
{{- end }}

{{- define "mota.releaseKeySecret" -}}
{{- if .Values.releaseKey.existingSecret }}
name: {{ .Values.releaseKey.existingSecret }}
keyKey: {{ .Values.releaseKey.keyKey }}
certKey: {{ .Values.releaseKey.certKey }}
{{- else if and .Values.devSecret.create .Values.devSecret.releaseKey }}
name: {{ include "mota.devSecretName" . }}
keyKey: release.key.pem
certKey: release.cert.pem
{{- end }}
{{- end }}

{{/* Where the pods mount files. */}}
{{- define "mota.paths" -}}
config: /etc/mota/backend.toml
dataDir: /var/lib/mota
releaseDir: /etc/mota/release
mqttCaDir: /etc/mota/mqtt-ca
postgresCaDir: /etc/mota/postgres-ca
mqttClientDir: /etc/mota/mqtt-client
systemCa: /etc/ssl/certs/ca-certificates.crt
{{- end }}

{{/*
Refuse what cannot work on a cluster: the backend's single-node defaults (SQLite, local
blobs, the embedded broker, a generated key per pod) and half-set secrets.
*/}}
{{- define "mota.validate" -}}
{{- $v := .Values }}
{{- $dev := $v.devSecret }}
{{- if not (include "mota.databaseSecret" .) }}
{{- fail "database: set database.existingSecret, a Secret with the PostgreSQL URL under database.urlKey (or devSecret.create with devSecret.databaseUrl, for development). The backend's SQLite default keeps the database in one pod: it cannot be shared by replicas and is lost when the pod goes." }}
{{- end }}
{{- if not $v.mqtt.url }}
{{- fail "mqtt.url: set the external broker, mqtt://HOST[:PORT] or mqtts://HOST[:PORT]. The backend's embedded broker serves one node only: devices would reach one replica of several." }}
{{- end }}
{{- if not $v.s3.bucket }}
{{- fail "s3.bucket: set the bucket for models and patches. Without it blobs go to the pod's scratch directory: other replicas cannot read them and they are lost when the pod goes." }}
{{- end }}
{{- if not (include "mota.releaseKeySecret" .) }}
{{- if not $v.releaseKey.allowDevelopmentKey }}
{{- fail "releaseKey: set releaseKey.existingSecret, a Secret with the release key and certificate from `mota keys release-new` (or devSecret.releaseKey and devSecret.releaseCert, or releaseKey.allowDevelopmentKey with one replica, for development)." }}
{{- end }}
{{- if or $v.autoscaling.enabled (gt (int $v.replicaCount) 1) }}
{{- fail "releaseKey.allowDevelopmentKey: each replica would generate its own development key and root, so devices could trust at most one of them. Use one replica (replicaCount 1, no autoscaling) or a release key." }}
{{- end }}
{{- end }}
{{- if and $v.ingress.enabled (not $v.ingress.host) }}
{{- fail "ingress.host: set the host name the Ingress serves (ingress.enabled is true)." }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail "autoscaling: minReplicas is larger than maxReplicas." }}
{{- end }}
{{- if ne (empty $dev.s3AccessKeyId) (empty $dev.s3SecretAccessKey) }}
{{- fail "devSecret: set both s3AccessKeyId and s3SecretAccessKey, or neither." }}
{{- end }}
{{- if ne (empty $dev.mqttUsername) (empty $dev.mqttPassword) }}
{{- fail "devSecret: set both mqttUsername and mqttPassword, or neither." }}
{{- end }}
{{- if ne (empty $dev.releaseKey) (empty $dev.releaseCert) }}
{{- fail "devSecret: set both releaseKey and releaseCert, or neither." }}
{{- end }}
{{- if not $dev.create }}
{{- range $key := list "databaseUrl" "s3AccessKeyId" "s3SecretAccessKey" "mqttUsername" "mqttPassword" "releaseKey" "releaseCert" }}
{{- if index $dev $key }}
{{- fail (printf "devSecret.%s is set but devSecret.create is false: set devSecret.create (development only) or use the section's existingSecret." $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The backend's configuration file (TOML; keys are its flags with `_`). Secrets are not in
it: they arrive as environment variables or files. Numbers the backend reads as floats
are strings, since its loader takes strings, integers and booleans.
*/}}
{{- define "mota.configToml" -}}
{{- $v := .Values }}
{{- $paths := include "mota.paths" . | fromYaml -}}
# mota-backend configuration, rendered by the mota chart. Environment variables
# (MOTA_*) override it: MOTA_MQTT_CLIENT_ID (the pod name), the secrets, and the
# image's MOTA_LISTEN and MOTA_DATA_DIR (the same values as here).
listen = "0.0.0.0:8080"
data_dir = {{ $paths.dataDir | toJson }}
log_format = {{ $v.config.logFormat | toJson }}
max_body_bytes = {{ int64 $v.config.maxBodyBytes }}
max_model_bytes = {{ int64 $v.config.maxModelBytes }}
delta_bases = {{ int64 $v.config.deltaBases }}
chunk_cache_bytes = {{ int64 $v.config.chunkCacheBytes }}
chunk_rate = {{ $v.config.chunkRate | toString | toJson }}
chunk_burst = {{ $v.config.chunkBurst | toString | toJson }}
{{- if include "mota.releaseKeySecret" . }}
release_key = {{ printf "%s/release.key.pem" $paths.releaseDir | toJson }}
release_cert = {{ printf "%s/release.cert.pem" $paths.releaseDir | toJson }}
{{- end }}
s3_bucket = {{ $v.s3.bucket | toJson }}
{{- if $v.s3.endpoint }}
s3_endpoint = {{ $v.s3.endpoint | toJson }}
{{- end }}
s3_region = {{ $v.s3.region | toJson }}
s3_path_style = {{ $v.s3.pathStyle }}
s3_prefix = {{ $v.s3.prefix | toJson }}
mqtt_url = {{ $v.mqtt.url | toJson }}
{{- with $v.mqtt.shareGroup }}
mqtt_share_group = {{ . | toJson }}
{{- end }}
# Only provisioned devices (POST /v1/devices) are registered; others' hellos are dropped.
auto_register = false
{{- if hasPrefix "mqtts://" $v.mqtt.url }}
{{- if $v.mqtt.tls.caSecret }}
mqtt_ca_file = {{ printf "%s/ca.crt" $paths.mqttCaDir | toJson }}
{{- else }}
mqtt_ca_file = {{ $paths.systemCa | toJson }}
{{- end }}
{{- end }}
{{- if $v.mqtt.tls.clientSecret }}
mqtt_client_cert = {{ printf "%s/tls.crt" $paths.mqttClientDir | toJson }}
mqtt_client_key = {{ printf "%s/tls.key" $paths.mqttClientDir | toJson }}
{{- end }}
{{- end }}

{{/* The database URL variable, shared by the server and the migration Job. */}}
{{- define "mota.databaseEnv" -}}
{{- $db := include "mota.databaseSecret" . | fromYaml -}}
- name: MOTA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.name }}
      key: {{ $db.key }}
{{- end }}
