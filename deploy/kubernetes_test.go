package deploy_test

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// rendered is a kustomization's output, decoded into the API types.
type rendered struct {
	dir  string
	objs []runtime.Object
}

// render builds the kustomization in dir and decodes every object strictly
// (unknown or duplicate fields are errors) into the Kubernetes API types
// and the prometheus-operator types; a kind neither knows is an error.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, networkingv1.AddToScheme,
		autoscalingv2.AddToScheme, policyv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	decoder := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	r := &rendered{dir: dir}
	for _, res := range resMap.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, res.CurId(), err)
		}
		obj, gvk, err := decoder.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s: %s does not decode strictly into a known API type: %v", dir, res.CurId(), err)
			continue
		}
		if gvk.Kind == "" {
			t.Errorf("%s: %s has no kind", dir, res.CurId())
		}
		r.objs = append(r.objs, obj)
	}
	if t.Failed() {
		t.FailNow()
	}
	return r
}

// each returns every rendered object of type T.
func each[T runtime.Object](r *rendered) []T {
	var out []T
	for _, o := range r.objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// one returns the rendered object of type T named name.
func one[T interface {
	runtime.Object
	GetName() string
}](t *testing.T, r *rendered, name string) T {
	t.Helper()
	for _, o := range each[T](r) {
		if o.GetName() == name {
			return o
		}
	}
	var zero T
	t.Fatalf("%s: no %T named %s", r.dir, zero, name)
	return zero
}

// configMap returns the data of the rendered ConfigMap named name, or nil.
func (r *rendered) configMap(name string) map[string]string {
	for _, cm := range each[*corev1.ConfigMap](r) {
		if cm.Name == name {
			return cm.Data
		}
	}
	return nil
}

// secret returns the keys of the rendered Secret named name, or nil when
// the kustomization does not make it.
func (r *rendered) secret(name string) map[string]string {
	for _, s := range each[*corev1.Secret](r) {
		if s.Name == name {
			out := map[string]string{}
			for k, v := range s.Data {
				out[k] = string(v)
			}
			maps.Copy(out, s.StringData)
			return out
		}
	}
	return nil
}

// externalSecret is the Secret the base references but leaves to the
// operator (docs/operations.md).
const externalSecret = "pm-secrets"

// containerEnv resolves a container's environment: envFrom ConfigMaps and
// Secrets and env entries (a value, or a ConfigMap/Secret key; a field
// reference resolves to "<field>"). Every reference must exist in the render,
// except the external Secret's keys in base, which resolve to "<secret>".
func (r *rendered) containerEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			data := r.configMap(from.ConfigMapRef.Name)
			if data == nil {
				t.Errorf("%s: container %s: envFrom ConfigMap %s is not in the render", r.dir, c.Name, from.ConfigMapRef.Name)
			}
			maps.Copy(env, data)
		case from.SecretRef != nil:
			t.Errorf("%s: container %s: envFrom Secret %s: name each secret key in env instead", r.dir, c.Name, from.SecretRef.Name)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = "<" + e.ValueFrom.FieldRef.FieldPath + ">"
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := r.configMap(ref.Name)[ref.Key]
			if !ok {
				t.Errorf("%s: container %s: %s from ConfigMap %s key %s, which the render lacks", r.dir, c.Name, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			data := r.secret(ref.Name)
			if data == nil && strings.HasPrefix(ref.Name, externalSecret) && filepath.Base(r.dir) == "base" {
				env[e.Name] = "<secret>"
				continue
			}
			v, ok := data[ref.Key]
			if !ok {
				t.Errorf("%s: container %s: %s from Secret %s key %s, which the render lacks", r.dir, c.Name, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		default:
			t.Errorf("%s: container %s: %s has a kind of valueFrom the test does not know", r.dir, c.Name, e.Name)
		}
	}
	return env
}

// podSpecs returns every pod template of the render, by workload.
func (r *rendered) podSpecs() map[string]corev1.PodTemplateSpec {
	out := map[string]corev1.PodTemplateSpec{}
	for _, d := range each[*appsv1.Deployment](r) {
		out["Deployment/"+d.Name] = d.Spec.Template
	}
	for _, j := range each[*batchv1.Job](r) {
		out["Job/"+j.Name] = j.Spec.Template
	}
	for _, s := range each[*appsv1.StatefulSet](r) {
		out["StatefulSet/"+s.Name] = s.Spec.Template
	}
	return out
}

// namedPort resolves a probe's or Service's port against a container.
func namedPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

const (
	nodeDeployment = "pm-node"
	migrateJob     = "pm-migrate"
	// drainMargin is the least time terminationGracePeriodSeconds leaves
	// after the preStop sleep and PM_SHUTDOWN_TIMEOUT.
	drainMargin = 5 * time.Second
)

func TestKubernetesBase(t *testing.T) {
	r := render(t, "kubernetes/base")
	checkKubernetes(t, r)
	// The HPA owns the replica count: a count in the Deployment would reset
	// it on every apply (and a scale-down closes WebSockets).
	if d := one[*appsv1.Deployment](t, r, nodeDeployment); d.Spec.Replicas != nil {
		t.Errorf("the base Deployment sets replicas %d: leave the count to the HPA", *d.Spec.Replicas)
	}

	// The ServiceMonitor scrapes the headless metrics Service and nothing
	// else, on a port that Service has, at /metrics.
	sms := each[*monitoringv1.ServiceMonitor](r)
	if len(sms) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(sms))
	}
	sm := sms[0]
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var selected []*corev1.Service
	for _, s := range each[*corev1.Service](r) {
		if sel.Matches(labels.Set(s.Labels)) {
			selected = append(selected, s)
		}
	}
	if len(selected) != 1 || selected[0].Spec.ClusterIP != corev1.ClusterIPNone {
		names := []string{}
		for _, s := range selected {
			names = append(names, s.Name)
		}
		t.Fatalf("the ServiceMonitor selects Services %v: want exactly the headless metrics Service", names)
	}
	metrics := selected[0]
	for _, ep := range sm.Spec.Endpoints {
		found := false
		for _, p := range metrics.Spec.Ports {
			found = found || p.Name == ep.Port
		}
		if !found {
			t.Errorf("ServiceMonitor endpoint port %q is not a port of Service %s", ep.Port, metrics.Name)
		}
		if ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint path %q, want /metrics", ep.Path)
		}
	}
	if n := len(each[*monitoringv1.PrometheusRule](r)); n != 1 {
		t.Errorf("%d PrometheusRules, want 1", n)
	}
}

func TestKubernetesDevOverlay(t *testing.T) {
	r := render(t, "kubernetes/overlays/dev")
	checkKubernetes(t, r)

	d := one[*appsv1.Deployment](t, r, nodeDeployment)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("dev runs %v replicas, want 2", d.Spec.Replicas)
	}
	// Self-contained: Postgres and Redis in the namespace, the Secret
	// generated, the database URL naming the role the init script makes.
	for _, name := range []string{"postgres", "redis"} {
		one[*appsv1.Deployment](t, r, name)
		one[*corev1.Service](t, r, name)
	}
	// The Secret's generated name carries a hash; the Deployment refers to
	// it by that name.
	secretName := ""
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "PM_DATABASE_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			secretName = e.ValueFrom.SecretKeyRef.Name
		}
	}
	sec := r.secret(secretName)
	if sec == nil || !strings.HasPrefix(secretName, externalSecret) {
		t.Fatalf("dev makes no Secret %s (the nodes refer to %q)", externalSecret, secretName)
	}
	u, err := url.Parse(sec["database-url"])
	if err != nil {
		t.Fatalf("dev database-url: %v", err)
	}
	pw, _ := u.User.Password()
	if u.User.Username() != "pm_app" || u.Hostname() != "postgres" || pw != sec["app-password"] {
		t.Errorf("dev database-url %s: want user pm_app with the app-password, at the postgres Service", u.Redacted())
	}
	pg := one[*appsv1.Deployment](t, r, "postgres").Spec.Template.Spec
	pgEnv := r.containerEnv(t, pg.Containers[0])
	if pgEnv["POSTGRES_APP_PASSWORD"] != sec["app-password"] {
		t.Error("the Postgres init script gets another password than the nodes use")
	}
	initScript := false
	for _, v := range pg.Volumes {
		if v.ConfigMap != nil && r.configMap(v.ConfigMap.Name)["init-app-role.sh"] != "" {
			initScript = strings.Contains(r.configMap(v.ConfigMap.Name)["init-app-role.sh"], "NOSUPERUSER NOBYPASSRLS")
		}
	}
	if !initScript {
		t.Error("the Postgres pod gets no init script creating a NOSUPERUSER NOBYPASSRLS role")
	}
	// A plain local cluster has no prometheus-operator.
	if n := len(each[*monitoringv1.ServiceMonitor](r)) + len(each[*monitoringv1.PrometheusRule](r)); n != 0 {
		t.Errorf("dev renders %d prometheus-operator objects: kind and minikube cannot take them", n)
	}
}

// checkKubernetes checks what base and every overlay must hold, and runs
// the image's binary with the manifests' settings to see each probe answer.
func checkKubernetes(t *testing.T, r *rendered) {
	t.Helper()
	known := flagEnvs(t)
	df, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	uid, _, err := df.finalUser()
	if err != nil {
		t.Fatal(err)
	}

	// Every PM_* variable of every container is one the binary reads.
	for workload, tpl := range r.podSpecs() {
		for _, c := range tpl.Spec.Containers {
			checkEnvNames(t, fmt.Sprintf("%s: %s container %s", r.dir, workload, c.Name), sortedKeys(r.containerEnv(t, c)), known)
		}
	}

	d := one[*appsv1.Deployment](t, r, nodeDeployment)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: %d containers in %s, want 1", r.dir, len(pod.Containers), d.Name)
	}
	c := pod.Containers[0]
	env := r.containerEnv(t, c)
	for _, name := range []string{"PM_DATABASE_URL", "PM_REDIS_URL", "PM_JWT_SECRET"} {
		found := false
		for _, e := range c.Env {
			found = found || (e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil)
		}
		if !found {
			t.Errorf("%s: %s does not come from a Secret key", r.dir, name)
		}
	}
	if env["PM_MIGRATE"] != "false" {
		t.Errorf("%s: nodes run with PM_MIGRATE=%q: want false (the Job migrates)", r.dir, env["PM_MIGRATE"])
	}
	listenPort := portOf(t, "PM_LISTEN_ADDR", env["PM_LISTEN_ADDR"])
	adminPort := portOf(t, "PM_ADMIN_ADDR", env["PM_ADMIN_ADDR"])
	clientCP, _ := namedPort(c, intstr.FromString("http"))
	adminCP, _ := namedPort(c, intstr.FromString("admin"))
	if strconv.Itoa(int(clientCP)) != listenPort || strconv.Itoa(int(adminCP)) != adminPort {
		t.Errorf("%s: container ports http=%d admin=%d; the node serves %s and %s", r.dir, clientCP, adminCP, listenPort, adminPort)
	}

	// Probes on the admin port, at the paths the node serves.
	probes := map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe}
	probePorts := map[string]int32{}
	for path, p := range probes {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: no httpGet probe for %s", r.dir, path)
			continue
		}
		if p.HTTPGet.Path != path {
			t.Errorf("%s: the %s probe gets %s", r.dir, path, p.HTTPGet.Path)
		}
		port, ok := namedPort(c, p.HTTPGet.Port)
		if !ok {
			t.Errorf("%s: the %s probe's port %s is not a container port", r.dir, path, p.HTTPGet.Port.String())
		}
		if strconv.Itoa(int(port)) != adminPort {
			t.Errorf("%s: the %s probe is on port %d, the admin port is %s", r.dir, path, port, adminPort)
		}
		probePorts[p.HTTPGet.Path] = port
	}

	// The drain: grace ≥ preStop sleep + PM_SHUTDOWN_TIMEOUT + margin; the
	// preStop is the kubelet's sleep (the image has no shell).
	shutdown, err := time.ParseDuration(env["PM_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Errorf("%s: PM_SHUTDOWN_TIMEOUT %q: %v (set it: the grace period is computed from it)", r.dir, env["PM_SHUTDOWN_TIMEOUT"], err)
	}
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Errorf("%s: no preStop sleep action", r.dir)
	} else {
		if c.Lifecycle.PreStop.Exec != nil {
			t.Errorf("%s: a preStop exec cannot run: the image has no shell", r.dir)
		}
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if pod.TerminationGracePeriodSeconds == nil {
		t.Errorf("%s: no terminationGracePeriodSeconds", r.dir)
	} else if grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second; grace < preStop+shutdown+drainMargin {
		t.Errorf("%s: terminationGracePeriodSeconds %v < preStop %v + PM_SHUTDOWN_TIMEOUT %v + %v", r.dir, grace, preStop, shutdown, drainMargin)
	}

	// Security and placement of every pod running the image.
	job := one[*batchv1.Job](t, r, migrateJob)
	for workload, tpl := range map[string]corev1.PodSpec{"Deployment/" + d.Name: pod, "Job/" + job.Name: job.Spec.Template.Spec} {
		checkSecurity(t, r.dir+": "+workload, tpl, int64(uid))
		if tpl.Containers[0].Image != c.Image {
			t.Errorf("%s: %s runs image %s, the nodes %s", r.dir, workload, tpl.Containers[0].Image, c.Image)
		}
		res := tpl.Containers[0].Resources
		if res.Requests.Cpu().IsZero() || res.Requests.Memory().IsZero() || res.Limits.Memory().IsZero() {
			t.Errorf("%s: %s lacks CPU/memory requests or a memory limit", r.dir, workload)
		}
	}
	keys := map[string]bool{}
	for _, tsc := range pod.TopologySpreadConstraints {
		keys[tsc.TopologyKey] = true
		sel, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: topology spread over %s does not select the node pods", r.dir, tsc.TopologyKey)
		}
	}
	if !keys["topology.kubernetes.io/zone"] || !keys["kubernetes.io/hostname"] {
		t.Errorf("%s: pods spread over %v, want zone and hostname", r.dir, sortedKeys(keys))
	}

	// The migration Job: `pm-node migrate`, with the nodes' settings.
	jc := job.Spec.Template.Spec.Containers[0]
	if !slices.Equal(jc.Command, nil) || !slices.Equal(jc.Args, []string{"migrate"}) {
		t.Errorf("%s: the Job runs command %q args %q, want args [migrate]", r.dir, jc.Command, jc.Args)
	}
	if rp := job.Spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyOnFailure && rp != corev1.RestartPolicyNever {
		t.Errorf("%s: the Job's restartPolicy is %q", r.dir, rp)
	}
	jobEnv := r.containerEnv(t, jc)
	if _, ok := jobEnv["PM_DATABASE_URL"]; !ok {
		t.Errorf("%s: the Job has no PM_DATABASE_URL", r.dir)
	}

	// Services: the client Service targets the client port; the admin port
	// only through the headless metrics Service.
	podLabels := labels.Set(d.Spec.Template.Labels)
	clientService := false
	for _, s := range each[*corev1.Service](r) {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			continue
		}
		for _, p := range s.Spec.Ports {
			target, ok := namedPort(c, p.TargetPort)
			if !ok {
				t.Errorf("%s: Service %s port %s targets %s, not a container port", r.dir, s.Name, p.Name, p.TargetPort.String())
				continue
			}
			switch strconv.Itoa(int(target)) {
			case listenPort:
				clientService = clientService || s.Spec.ClusterIP != corev1.ClusterIPNone
			case adminPort:
				if s.Spec.ClusterIP != corev1.ClusterIPNone {
					t.Errorf("%s: Service %s exposes the admin port: only the headless metrics Service may", r.dir, s.Name)
				}
			}
		}
	}
	if !clientService {
		t.Errorf("%s: no Service targets the client port %s", r.dir, listenPort)
	}

	// The Ingress reaches the client Service, with WebSocket timeouts.
	for _, ing := range each[*networkingv1.Ingress](r) {
		for _, ann := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
			if v, err := strconv.Atoi(ing.Annotations[ann]); err != nil || v < 300 {
				t.Errorf("%s: Ingress %s: %s = %q: WebSockets need at least 300 (seconds)", r.dir, ing.Name, ann, ing.Annotations[ann])
			}
		}
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				svc := one[*corev1.Service](t, r, p.Backend.Service.Name)
				ok := false
				for _, sp := range svc.Spec.Ports {
					if sp.Name == p.Backend.Service.Port.Name || sp.Port == p.Backend.Service.Port.Number {
						target, _ := namedPort(c, sp.TargetPort)
						ok = strconv.Itoa(int(target)) == listenPort
					}
				}
				if !ok {
					t.Errorf("%s: Ingress %s path %s does not reach the client port", r.dir, ing.Name, p.Path)
				}
			}
		}
	}

	// HPA: scales the Deployment, slowly down.
	hpa := one[*autoscalingv2.HorizontalPodAutoscaler](t, r, nodeDeployment)
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != d.Name {
		t.Errorf("%s: the HPA scales %s/%s", r.dir, hpa.Spec.ScaleTargetRef.Kind, hpa.Spec.ScaleTargetRef.Name)
	}
	if b := hpa.Spec.Behavior; b == nil || b.ScaleDown == nil || b.ScaleDown.StabilizationWindowSeconds == nil || *b.ScaleDown.StabilizationWindowSeconds < 300 {
		t.Errorf("%s: the HPA has no scale-down stabilisation window of at least 300s", r.dir)
	}
	pdb := one[*policyv1.PodDisruptionBudget](t, r, nodeDeployment)
	if sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || !sel.Matches(podLabels) {
		t.Errorf("%s: the PodDisruptionBudget does not select the node pods", r.dir)
	}

	// NetworkPolicy: the admin port from the monitoring namespace only.
	np := one[*networkingv1.NetworkPolicy](t, r, nodeDeployment)
	if sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil || !sel.Matches(podLabels) {
		t.Errorf("%s: the NetworkPolicy does not select the node pods", r.dir)
	}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil {
				t.Errorf("%s: a NetworkPolicy rule admits every port", r.dir)
				continue
			}
			port, _ := namedPort(c, *p.Port)
			if strconv.Itoa(int(port)) != adminPort {
				continue
			}
			if len(rule.From) == 0 {
				t.Errorf("%s: the NetworkPolicy admits anyone to the admin port", r.dir)
			}
			for _, peer := range rule.From {
				if peer.NamespaceSelector == nil || peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" || peer.IPBlock != nil {
					t.Errorf("%s: the NetworkPolicy admits %v to the admin port: want the monitoring namespace only", r.dir, peer)
				}
			}
		}
	}
	if t.Failed() {
		return
	}

	// The binary with the manifests' settings: the Job's command migrates
	// a fresh database; a node with the Deployment's settings (on loopback)
	// then answers every probe on the port it names.
	base := testEnv(t)
	migrate := maps.Clone(base)
	for k, v := range jobEnv {
		if _, ours := base[k]; !ours && !strings.HasPrefix(v, "<") {
			migrate[k] = v
		}
	}
	p := startProcess(t, nodeBinary(t), migrate, nil, jc.Args...)
	if err := p.wait(t, startWait); err != nil {
		t.Fatalf("the Job's `pm-node %s`: %v\n%s", strings.Join(jc.Args, " "), err, p.out)
	}
	nodeEnv := maps.Clone(base)
	for k, v := range env {
		if _, ours := base[k]; !ours && !strings.HasPrefix(v, "<") {
			nodeEnv[k] = v
		}
	}
	// The node listens where the manifests say, moved to free loopback ports
	// so that the test does not depend on 8080 and 9090 being free here:
	// each probe is sent to the free port standing for the port it names.
	moved := map[string]string{listenPort: freeLoopbackPort(t), adminPort: freeLoopbackPort(t)}
	nodeEnv["PM_LISTEN_ADDR"] = "127.0.0.1:" + moved[listenPort]
	nodeEnv["PM_ADMIN_ADDR"] = "127.0.0.1:" + moved[adminPort]
	nodeEnv["PM_LOG_FORMAT"] = "text"
	node := startProcess(t, nodeBinary(t), nodeEnv, nil)
	node.waitServing(t)
	for path, port := range probePorts {
		served, ok := moved[strconv.Itoa(int(port))]
		if !ok {
			t.Errorf("%s: probe %s names port %d, which the node does not listen on", r.dir, path, port)
			continue
		}
		u := fmt.Sprintf("http://127.0.0.1:%s%s", served, path)
		if status, body, err := httpGet(u); err != nil || status != http.StatusOK {
			t.Errorf("%s: probe GET %s (port %d): HTTP %d %q, %v; want 200", r.dir, u, port, status, body, err)
		}
	}
	if err := node.stop(); err != nil {
		t.Errorf("the node did not drain cleanly on SIGTERM: %v\n%s", err, node.out)
	}
}

// checkSecurity checks a pod that runs the image: non-root as the image's
// user, read-only root, no privilege escalation, no capabilities, the
// runtime's seccomp profile, no service account token.
func checkSecurity(t *testing.T, where string, pod corev1.PodSpec, uid int64) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: runAsNonRoot is not set", where)
	}
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != uid {
		t.Errorf("%s: runAsUser is not the Dockerfile's USER %d", where, uid)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile is not RuntimeDefault", where)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: mounts a service account token it does not use", where)
	}
	for _, c := range pod.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: container %s: root filesystem not read-only", where, c.Name)
		}
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", where, c.Name)
		}
		if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: container %s: capabilities are not drop [ALL]", where, c.Name)
		}
	}
}

// freeLoopbackPort returns a port that was free on 127.0.0.1 a moment ago.
func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
