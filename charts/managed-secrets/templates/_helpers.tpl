{{/* Names and labels shared by the templates. */}}

{{- define "managed-secrets.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "managed-secrets.fullname" -}}
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

{{- define "managed-secrets.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "managed-secrets.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "managed-secrets.selectorLabels" -}}
app.kubernetes.io/name: {{ include "managed-secrets.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "managed-secrets.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "managed-secrets.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: managed-secrets
{{- end }}

{{- define "managed-secrets.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Resources that are cluster-scoped: a Role cannot grant them, so in namespaced mode the rules naming them
go to the ClusterRole. Subresources (x/status) follow their resource.
*/}}
{{- define "managed-secrets.clusterScopedResources" -}}
namespaces nodes persistentvolumes customresourcedefinitions clustersecretbackends clusterroles clusterrolebindings storageclasses priorityclasses ingressclasses runtimeclasses apiservices mutatingwebhookconfigurations validatingwebhookconfigurations certificatesigningrequests tokenreviews subjectaccessreviews selfsubjectaccessreviews selfsubjectrulesreviews
{{- end }}

{{/*
The operator's RBAC rules from files/rbac-rules.yaml (the single source the tests use too), split by
scope: ("namespaced" | "cluster" | "all"). Renders a YAML list of PolicyRules, or "[]".
*/}}
{{- define "managed-secrets.rules" -}}
{{- $scope := .scope }}
{{- $clusterScoped := splitList " " (include "managed-secrets.clusterScopedResources" .root) }}
{{- $rules := .root.Files.Get "files/rbac-rules.yaml" | fromYamlArray }}
{{- $out := list }}
{{- range $rule := $rules }}
{{- if not $rule.resources }}
{{- if ne $scope "namespaced" }}{{/* nonResourceURLs rules exist only cluster-wide */}}
{{- $out = append $out $rule }}
{{- end }}
{{- continue }}
{{- end }}
{{- $keep := list }}
{{- range $resource := $rule.resources }}
{{- $isCluster := has (first (splitList "/" $resource)) $clusterScoped }}
{{- if or (eq $scope "all") (and (eq $scope "cluster") $isCluster) (and (eq $scope "namespaced") (not $isCluster)) }}
{{- $keep = append $keep $resource }}
{{- end }}
{{- end }}
{{- if $keep }}
{{- $out = append $out (merge (dict "resources" $keep) (omit $rule "resources")) }}
{{- end }}
{{- end }}
{{- if $out }}
{{- toYaml $out }}
{{- else }}
{{- "[]" }}
{{- end }}
{{- end }}
