{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "rewards.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified release name. */}}
{{- define "rewards.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rewards.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "rewards.labels" -}}
helm.sh/chart: {{ include "rewards.chart" . }}
{{ include "rewards.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rewards
{{- end }}

{{/* Selector labels shared by every component; add app.kubernetes.io/component. */}}
{{- define "rewards.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rewards.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rewards.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "rewards.configMapName" -}}
{{- printf "%s-config" (include "rewards.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Non-secret settings: the values' config plus the data dir every pod mounts. */}}
{{- define "rewards.configData" -}}
{{- $data := dict "REWARDS_DATA_DIR" .Values.dataDir "METRICS_PORT" (toString .Values.metrics.port) }}
{{- range $k, $v := .Values.config }}
{{- $_ := set $data $k (toString $v) }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
Secret env vars: every entry of .Values.secrets.env read with secretKeyRef from an
existing Secret. Never a literal value.
*/}}
{{- define "rewards.secretEnv" -}}
{{- $default := .Values.secrets.existingSecret }}
{{- range $name, $ref := .Values.secrets.env }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "secrets.existingSecret (or secrets.env.%s.existingSecret) is required" $name) (default $default $ref.existingSecret) | quote }}
      key: {{ required (printf "secrets.env.%s.key is required" $name) $ref.key | quote }}
      {{- if $ref.optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}

{{- define "rewards.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "rewards.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/* Writable mounts for a read-only root filesystem. */}}
{{- define "rewards.scratchVolumes" -}}
- name: data
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
{{- end }}

{{- define "rewards.scratchVolumeMounts" -}}
- name: data
  mountPath: {{ .Values.dataDir }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "rewards.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .Values.serviceAccountName }}
serviceAccountName: {{ .Values.serviceAccountName }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- include "rewards.podSecurityContext" . | nindent 2 }}
{{- end }}

{{/*
Env, resources, security and mounts of the migration Job's containers. The Job is a
pre-install hook: it runs BEFORE the chart's ConfigMap exists, so the non-secret
settings are inlined here (same data as the ConfigMap) instead of envFrom.
The referenced Secrets are created outside the chart and already exist.
*/}}
{{- define "rewards.jobEnv" -}}
env:
  {{- range $k, $v := (include "rewards.configData" . | fromYaml) }}
  - name: {{ $k }}
    value: {{ $v | quote }}
  {{- end }}
  {{- include "rewards.secretEnv" . | trim | nindent 2 }}
resources:
  {{- toYaml .Values.migrations.resources | nindent 2 }}
securityContext:
  {{- include "rewards.containerSecurityContext" . | nindent 2 }}
volumeMounts:
  {{- include "rewards.scratchVolumeMounts" . | nindent 2 }}
{{- end }}
