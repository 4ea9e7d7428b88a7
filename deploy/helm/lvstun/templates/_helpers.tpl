{{/*
Name of the chart (or nameOverride), at most 54 characters so that "<name>-operator" and the
like stay within the 63-character limit of names and label values.
*/}}
{{- define "lvstun.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 54 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name prefix of every object: fullnameOverride, or the release name when it
already contains the chart name, or "<release>-<name>"; at most 54 characters (see above).
*/}}
{{- define "lvstun.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, as used by the helm.sh/chart label. */}}
{{- define "lvstun.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "lvstun.labels" -}}
helm.sh/chart: {{ include "lvstun.chart" . }}
app.kubernetes.io/name: {{ include "lvstun.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lvstun
{{- end }}

{{/* Selector labels of the operator pods (immutable once installed: keep them small). */}}
{{- define "lvstun.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lvstun.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Names of the operator's objects and of the three ServiceAccounts. */}}
{{- define "lvstun.operator.name" -}}
{{- printf "%s-operator" (include "lvstun.fullname" .) }}
{{- end }}
{{- define "lvstun.balancer.serviceAccountName" -}}
{{- printf "%s-balancer" (include "lvstun.fullname" .) }}
{{- end }}
{{- define "lvstun.web.serviceAccountName" -}}
{{- printf "%s-web" (include "lvstun.fullname" .) }}
{{- end }}
{{/* Name of the pre-delete hook's Job and its RBAC ("-uninstall" fits in 63 characters). */}}
{{- define "lvstun.uninstall.name" -}}
{{- printf "%s-uninstall" (include "lvstun.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}

{{/*
Image reference from an image values block ("image" or "nodeImage"):
repository@digest when a digest is set, else repository:tag with the tag defaulting to the
chart's appVersion. Call as (include "lvstun.imageRef" (list .Values.image .Chart.AppVersion)).
*/}}
{{- define "lvstun.imageRef" -}}
{{- $img := index . 0 -}}
{{- $appVersion := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $appVersion $img.tag) -}}
{{- end -}}
{{- end }}

{{/*
A node selector as `kubectl label node` takes it: "key=value" pairs, space separated, sorted
("(every node)" when empty).
*/}}
{{- define "lvstun.labelArgs" -}}
{{- $pairs := list -}}
{{- range $k, $v := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- if $pairs -}}{{ join " " $pairs }}{{- else -}}(every node){{- end -}}
{{- end -}}
