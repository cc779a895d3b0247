{{/* The chart name, truncated for label values. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: object names start with it. */}}
{{- define "ferry.fullname" -}}
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

{{/* The full name names the Service, which must be a DNS-1035 label. */}}
{{- define "ferry.checkName" -}}
{{- $name := include "ferry.fullname" . }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "the chart names its objects %q (from the release name, nameOverride or fullnameOverride), which is not a valid Service name (a DNS-1035 label: lower-case letters, digits and '-', starting with a letter); set fullnameOverride to one" $name) }}
{{- end }}
{{- end }}

{{- define "ferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image the webhook runs. */}}
{{- define "ferry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the serving certificate. */}}
{{- define "ferry.tlsSecret" -}}
{{- printf "%s-tls" (include "ferry.fullname" .) }}
{{- end }}

{{/* The Service's DNS names, which the certificate must carry. */}}
{{- define "ferry.dnsNames" -}}
{{- $svc := include "ferry.fullname" . -}}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson }}
{{- end }}

{{/*
What the webhook injects by default must be what the cluster's API server
admits, or every pod of a labelled namespace is refused (the webhook
answered, so failurePolicy does not help): a native sidecar (restartPolicy
Always on an init container) needs 1.29, the preStop sleep action 1.30 (both
on by default from there). .Capabilities.KubeVersion is the cluster's for
helm install and upgrade, --kube-version's for helm template.
*/}}
{{- define "ferry.checkKubeVersion" -}}
{{- $v := .Capabilities.KubeVersion.Version }}
{{- if and .Values.inject.nativeSidecar (not (semverCompare ">=1.29.0-0" $v)) }}
{{- fail (printf "inject.nativeSidecar: native sidecars need Kubernetes 1.29 or later, and the cluster is %s: its API server would refuse every injected pod; set inject.nativeSidecar=false" $v) }}
{{- end }}
{{- /* Zero in any form the value takes ("0s", 0, "0h0m0s"): no hook. */}}
{{- $sleep := toString .Values.inject.preStopSleep }}
{{- if and (not (regexMatch "^[0hms]*$" $sleep)) (not (semverCompare ">=1.30.0-0" $v)) }}
{{- fail (printf "inject.preStopSleep: the preStop sleep action (%s) needs Kubernetes 1.30 or later, and the cluster is %s: its API server would refuse every injected pod; set inject.preStopSleep=0s (no preStop hook)" $sleep $v) }}
{{- end }}
{{- end }}
