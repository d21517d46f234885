{{/* Names, labels and the pieces both Deployments share. */}}

{{- define "cks-lab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cks-lab.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "cks-lab.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "cks-lab.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The namespace of the pools (and the operator's --namespace, the gateway's --namespace). */}}
{{- define "cks-lab.poolNamespace" -}}
{{- default .Release.Namespace .Values.pools.namespace -}}
{{- end -}}

{{- define "cks-lab.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cks-lab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cks-lab
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* metadata.annotations of every object (commonAnnotations), or nothing. */}}
{{- define "cks-lab.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "operator"). */}}
{{- define "cks-lab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cks-lab.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cks-lab.componentLabels" -}}
{{ include "cks-lab.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cks-lab.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "cks-lab.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cks-lab.gatewayServiceAccount" -}}
{{- if .Values.gateway.serviceAccount.create -}}
{{- default (printf "%s-gateway" (include "cks-lab.fullname" .)) .Values.gateway.serviceAccount.name -}}
{{- else -}}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest of an image value. */}}
{{- define "cks-lab.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "cks-lab.image" -}}
{{- include "cks-lab.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* Container security context: Pod Security "restricted" and then some. */}}
{{- define "cks-lab.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cks-lab.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The scenario catalog directory the binaries are given. */}}
{{- define "cks-lab.scenariosDir" -}}
{{- if eq .Values.scenarios.source "configMap" -}}
/etc/cks-lab/scenarios
{{- else if eq .Values.scenarios.source "gitSync" -}}
{{- printf "/git/current/%s" (trimPrefix "/" .Values.scenarios.gitSync.subPath) | trimSuffix "/" -}}
{{- else -}}
/usr/share/cks-lab/scenarios
{{- end -}}
{{- end -}}

{{/*
The API credentials as a projected volume mounted into the one container that talks to the API:
the pods set automountServiceAccountToken false, so a sidecar (git-sync) gets no token.
*/}}
{{- define "cks-lab.apiTokenVolume" -}}
- name: api-token
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end -}}

{{- define "cks-lab.apiTokenMount" -}}
- name: api-token
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end -}}

{{/* Catalog volumes (configMap / gitSync) of a pod. */}}
{{- define "cks-lab.scenarioVolumes" -}}
{{- if eq .Values.scenarios.source "configMap" }}
- name: scenarios
  configMap:
    name: {{ required "scenarios.configMap.name is required with scenarios.source configMap" .Values.scenarios.configMap.name }}
    {{- with .Values.scenarios.configMap.items }}
    items:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- else if eq .Values.scenarios.source "gitSync" }}
- name: git
  emptyDir: {}
- name: git-tmp
  emptyDir: {}
{{- with .Values.scenarios.gitSync.credentialsSecret }}
- name: git-secret
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: password
        path: password
{{- end }}
{{- end }}
{{- end -}}

{{- define "cks-lab.scenarioMounts" -}}
{{- if eq .Values.scenarios.source "configMap" }}
- name: scenarios
  mountPath: /etc/cks-lab/scenarios
  readOnly: true
{{- else if eq .Values.scenarios.source "gitSync" }}
- name: git
  mountPath: /git
  readOnly: true
{{- end }}
{{- end -}}

{{/* The git-sync sidecar (a native sidecar: an init container that keeps running). */}}
{{- define "cks-lab.gitSync" -}}
{{- $g := .Values.scenarios.gitSync -}}
- name: git-sync
  image: {{ include "cks-lab.imageRef" (dict "image" $g.image "default" "v4.4.0") }}
  imagePullPolicy: {{ $g.image.pullPolicy }}
  restartPolicy: Always
  env:
    - name: GITSYNC_REPO
      value: {{ required "scenarios.gitSync.repo is required with scenarios.source gitSync" $g.repo | quote }}
    - name: GITSYNC_REF
      value: {{ $g.ref | quote }}
    - name: GITSYNC_ROOT
      value: /git
    - name: GITSYNC_LINK
      value: current
    - name: GITSYNC_PERIOD
      value: {{ printf "%ds" (int $g.periodSeconds) | quote }}
    - name: GITSYNC_DEPTH
      value: "1"
    - name: HOME
      value: /tmp
    - name: GITSYNC_HTTP_BIND
      value: ":2020"
    {{- if $g.credentialsSecret }}
    - name: GITSYNC_USERNAME
      value: {{ required "scenarios.gitSync.username is required with scenarios.gitSync.credentialsSecret" $g.username | quote }}
    - name: GITSYNC_PASSWORD_FILE
      value: /etc/git-secret/password
    {{- end }}
  # The main container starts once the first sync is done (git-sync's / answers 200 then).
  startupProbe:
    httpGet:
      path: /
      port: 2020
    periodSeconds: 2
    failureThreshold: 150
  livenessProbe:
    httpGet:
      path: /
      port: 2020
    periodSeconds: 30
  securityContext:
    {{- include "cks-lab.containerSecurityContext" . | nindent 4 }}
  resources:
    {{- toYaml $g.resources | nindent 4 }}
  volumeMounts:
    - name: git
      mountPath: /git
    - name: git-tmp
      mountPath: /tmp
    {{- if $g.credentialsSecret }}
    - name: git-secret
      mountPath: /etc/git-secret
      readOnly: true
    {{- end }}
{{- end -}}

{{/*
Deployment annotations: commonAnnotations and the checkov checks this chart does not meet, each
with its reason (make chart-test runs checkov on the rendered chart).
*/}}
{{- define "cks-lab.deploymentCheckovSkips" -}}
{{- with .Values.commonAnnotations }}
{{ toYaml . }}
{{- end }}
{{- /* Images are versioned (the tag is the chart's appVersion) and IfNotPresent keeps a
       restart from depending on the registry; pullPolicy Always is a value away. */}}
checkov.io/skip1: CKV_K8S_15=images are pinned by version tag or digest; pulling on every start adds a registry dependency
{{- $gitSync := eq .Values.scenarios.source "gitSync" }}
{{- if or (not .Values.image.digest) (and $gitSync (not .Values.scenarios.gitSync.image.digest)) }}
{{- /* No digest is known before the image is published; image.digest (and
       scenarios.gitSync.image.digest) pin it, and then the check runs. */}}
checkov.io/skip2: CKV_K8S_43=no digest configured; set image.digest (and scenarios.gitSync.image.digest) to pin by digest
{{- end }}
{{- end -}}
