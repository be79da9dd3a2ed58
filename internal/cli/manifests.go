package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/vxflow/vxflow/api/v1alpha1"
)

// ClusterState is the set of API objects a node's desired state is computed from, whether read from
// manifests (render) or from the API server (status, trace).
type ClusterState struct {
	// ClusterNetwork is the singleton named default, nil when there is none.
	ClusterNetwork *v1alpha1.ClusterNetwork
	// HostSubnets, Services, EndpointSlices, Pods and Nodes are every object of their kind.
	HostSubnets    []v1alpha1.HostSubnet
	Services       []corev1.Service
	EndpointSlices []discoveryv1.EndpointSlice
	Pods           []corev1.Pod
	Nodes          []corev1.Node
	// Sources says where each object of a manifest set came from, by objectKey; empty for live state.
	Sources map[string]Source
	// Ignored counts the objects of kinds vxflow does not read (Deployments, ConfigMaps…), by kind.
	Ignored map[string]int
}

// Source is the position of one object in the manifests, so that every error names the file and document
// to fix.
type Source struct {
	// File is the path as given (or found under a given directory); "-" is standard input.
	File string
	// Doc is the 1-based index of the YAML document in the file.
	Doc int
	// Line is the 1-based line on which the document starts.
	Line int
	// Item is the 1-based index inside a List document, 0 for a plain object.
	Item int
}

// String prints the position as file:line (document N[, item M]).
func (s Source) String() string {
	if s.Item > 0 {
		return fmt.Sprintf("%s:%d (document %d, item %d)", s.File, s.Line, s.Doc, s.Item)
	}
	return fmt.Sprintf("%s:%d (document %d)", s.File, s.Line, s.Doc)
}

// ManifestError is a problem with one document of the manifests, located precisely.
type ManifestError struct {
	// Source is where the document is.
	Source Source
	// Object names the object ("HostSubnet node2"), empty when the document could not be read that far.
	Object string
	// Err is what is wrong.
	Err error
}

// Error is part of the error interface.
func (e *ManifestError) Error() string {
	if e.Object != "" {
		return fmt.Sprintf("%s: %s: %v", e.Source, e.Object, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Source, e.Err)
}

// Unwrap returns the underlying error.
func (e *ManifestError) Unwrap() error { return e.Err }

// objectKey identifies an object across kinds: Kind/namespace/name (namespace empty for cluster objects).
func objectKey(kind, namespace, name string) string {
	return kind + "/" + namespace + "/" + name
}

// manifestExtensions are the file name endings read when a directory is given.
var manifestExtensions = []string{".yaml", ".yml", ".json"}

// LoadManifests reads every object from paths: files (any name), directories (recursively, their .yaml,
// .yml and .json files in lexical order) and "-" for standard input. Files may hold several YAML documents
// and List objects. Objects of kinds vxflow does not read are counted in Ignored; a document that cannot be
// decoded, an unknown field, or the same object twice is an error naming its file, line and document.
func LoadManifests(paths []string, stdin io.Reader) (*ClusterState, error) {
	if len(paths) == 0 {
		return nil, errors.New("failed to load manifests: no file given (use -f FILE|DIR, or -f - for standard input)")
	}
	st := &ClusterState{Sources: map[string]Source{}, Ignored: map[string]int{}}
	var errs []error
	for _, p := range paths {
		files, err := expandPath(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			var data []byte
			if f == "-" {
				if stdin == nil {
					stdin = os.Stdin
				}
				data, err = io.ReadAll(stdin)
			} else {
				data, err = os.ReadFile(f)
			}
			if err != nil {
				return nil, fmt.Errorf("failed to read %s: %w", f, err)
			}
			errs = append(errs, st.addFile(f, data)...)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	st.sort()
	return st, nil
}

// expandPath returns the files a -f argument names.
func expandPath(p string) ([]string, error) {
	if p == "-" {
		return []string{"-"}, nil
	}
	info, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("failed to read manifests: %w", err)
	}
	if !info.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != p && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir // .git and friends
			}
			return nil
		}
		if slices.Contains(manifestExtensions, strings.ToLower(filepath.Ext(path))) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to walk %s: %w", p, err)
	}
	slices.Sort(files)
	return files, nil
}

// document is one YAML document of a file and the line it starts on.
type document struct {
	data []byte
	line int
}

// splitDocuments splits a YAML stream at its "---" separator lines, keeping each document's first line.
func splitDocuments(data []byte) []document {
	var docs []document
	var cur bytes.Buffer
	start, n := 1, 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for sc.Scan() {
		n++
		line := sc.Text()
		if line == "---" || strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "---\t") {
			docs = append(docs, document{data: bytes.Clone(cur.Bytes()), line: start})
			cur.Reset()
			start = n + 1
			continue
		}
		if line == "..." {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(docs, document{data: cur.Bytes(), line: start})
}

// blank reports whether a document holds nothing but white space and comments.
func blank(doc []byte) bool {
	for _, l := range strings.Split(string(doc), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// absoluteLines rewrites the document-relative "line N" of a YAML error into a line of the file.
func absoluteLines(err error, first int) error {
	msg := yamlLineRE.ReplaceAllStringFunc(err.Error(), func(m string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
		return fmt.Sprintf("line %d", n+first-1)
	})
	return errors.New(msg)
}

// addFile decodes every document of one file into st.
func (st *ClusterState) addFile(file string, data []byte) []error {
	var errs []error
	for i, doc := range splitDocuments(data) {
		if blank(doc.data) {
			continue
		}
		src := Source{File: file, Doc: i + 1, Line: doc.line}
		js, err := yaml.YAMLToJSON(doc.data)
		if err != nil {
			errs = append(errs, &ManifestError{Source: src, Err: fmt.Errorf("invalid YAML: %w", absoluteLines(err, doc.line))})
			continue
		}
		errs = append(errs, st.addObject(src, js)...)
	}
	return errs
}

// typeProbe reads the type and name of any object, and the items of a List.
type typeProbe struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

// decodeStrict decodes JSON into obj as the API server does (field names are case-sensitive), refusing
// unknown and duplicate fields: they are almost always typos, and a misspelt field would silently render a
// different node.
func decodeStrict(js []byte, obj any) error {
	strict, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// addObject decodes one object (or the items of a List) into st.
func (st *ClusterState) addObject(src Source, js []byte) []error {
	var probe typeProbe
	if err := json.Unmarshal(js, &probe); err != nil {
		return []error{&ManifestError{Source: src, Err: fmt.Errorf("not a Kubernetes object: %w", err)}}
	}
	if probe.APIVersion == "" || probe.Kind == "" {
		return []error{&ManifestError{Source: src, Err: errors.New("apiVersion and kind are required")}}
	}
	if strings.HasSuffix(probe.Kind, "List") && probe.Items != nil {
		var errs []error
		for i, item := range probe.Items {
			isrc := src
			isrc.Item = i + 1
			errs = append(errs, st.addObject(isrc, item)...)
		}
		return errs
	}
	name := probe.Kind + " " + probe.Metadata.Name
	if probe.Metadata.Namespace != "" {
		name = probe.Kind + " " + probe.Metadata.Namespace + "/" + probe.Metadata.Name
	}
	fail := func(err error) []error { return []error{&ManifestError{Source: src, Object: name, Err: err}} }
	if probe.Metadata.Name == "" {
		return fail(errors.New("metadata.name is required"))
	}

	var err error
	var ns string
	switch gvk := probe.APIVersion + "/" + probe.Kind; gvk {
	case v1alpha1.GroupVersion.String() + "/ClusterNetwork":
		var o v1alpha1.ClusterNetwork
		if err = decodeStrict(js, &o); err == nil {
			if o.Name != v1alpha1.ClusterNetworkName {
				return fail(fmt.Errorf("a ClusterNetwork must be named %q: a cluster has exactly one overlay", v1alpha1.ClusterNetworkName))
			}
			if prev := st.ClusterNetwork; prev != nil {
				err = fmt.Errorf("defined twice (first at %s)", st.Sources[objectKey(probe.Kind, "", prev.Name)])
				break
			}
			st.ClusterNetwork = &o
		}
	case v1alpha1.GroupVersion.String() + "/HostSubnet":
		var o v1alpha1.HostSubnet
		if err = decodeStrict(js, &o); err == nil {
			st.HostSubnets = append(st.HostSubnets, o)
		}
	case "v1/Service":
		var o corev1.Service
		if err = decodeStrict(js, &o); err == nil {
			o.Namespace = defaultNamespace(o.Namespace)
			ns = o.Namespace
			st.Services = append(st.Services, o)
		}
	case "discovery.k8s.io/v1/EndpointSlice":
		var o discoveryv1.EndpointSlice
		if err = decodeStrict(js, &o); err == nil {
			o.Namespace = defaultNamespace(o.Namespace)
			ns = o.Namespace
			st.EndpointSlices = append(st.EndpointSlices, o)
		}
	case "v1/Pod":
		var o corev1.Pod
		if err = decodeStrict(js, &o); err == nil {
			o.Namespace = defaultNamespace(o.Namespace)
			ns = o.Namespace
			st.Pods = append(st.Pods, o)
		}
	case "v1/Node":
		var o corev1.Node
		if err = decodeStrict(js, &o); err == nil {
			st.Nodes = append(st.Nodes, o)
		}
	default:
		if strings.HasPrefix(probe.APIVersion, v1alpha1.GroupVersion.Group+"/") {
			return fail(fmt.Errorf("%s is not a kind vxflowctl knows (it reads %s ClusterNetwork and HostSubnet)",
				gvk, v1alpha1.GroupVersion))
		}
		st.Ignored[probe.Kind]++
		return nil
	}
	if err != nil {
		return fail(fmt.Errorf("failed to decode: %w", err))
	}
	key := objectKey(probe.Kind, ns, probe.Metadata.Name)
	if prev, ok := st.Sources[key]; ok && probe.Kind != "ClusterNetwork" {
		st.dropLast(probe.Kind)
		return fail(fmt.Errorf("defined twice (first at %s)", prev))
	}
	st.Sources[key] = src
	return nil
}

// dropLast removes the object of kind just appended (a duplicate).
func (st *ClusterState) dropLast(kind string) {
	switch kind {
	case "HostSubnet":
		st.HostSubnets = st.HostSubnets[:len(st.HostSubnets)-1]
	case "Service":
		st.Services = st.Services[:len(st.Services)-1]
	case "EndpointSlice":
		st.EndpointSlices = st.EndpointSlices[:len(st.EndpointSlices)-1]
	case "Pod":
		st.Pods = st.Pods[:len(st.Pods)-1]
	case "Node":
		st.Nodes = st.Nodes[:len(st.Nodes)-1]
	}
}

// defaultNamespace is the namespace kubectl apply would give an object without one.
func defaultNamespace(ns string) string {
	if ns == "" {
		return corev1.NamespaceDefault
	}
	return ns
}

// sort orders every list by namespace and name, so that output never depends on file order.
func (st *ClusterState) sort() {
	slices.SortStableFunc(st.HostSubnets, func(a, b v1alpha1.HostSubnet) int { return strings.Compare(a.Name, b.Name) })
	slices.SortStableFunc(st.Services, func(a, b corev1.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	slices.SortStableFunc(st.EndpointSlices, func(a, b discoveryv1.EndpointSlice) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	slices.SortStableFunc(st.Pods, func(a, b corev1.Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	slices.SortStableFunc(st.Nodes, func(a, b corev1.Node) int { return strings.Compare(a.Name, b.Name) })
}

// fieldPathSource maps a model field path ("hostSubnets[node2].spec.subnet", "pods[ns/web-0].ip",
// "services[ns/svc].spec.ports[0]", "endpointSlices[ns/x]…", "clusterNetwork.spec.mtu") to the position of
// the object it names, when the state came from manifests.
func (st *ClusterState) fieldPathSource(path string) (Source, bool) {
	if st == nil || len(st.Sources) == 0 {
		return Source{}, false
	}
	if strings.HasPrefix(path, "clusterNetwork") {
		s, ok := st.Sources[objectKey("ClusterNetwork", "", v1alpha1.ClusterNetworkName)]
		return s, ok
	}
	prefixes := []struct{ prefix, kind string }{
		{"hostSubnets[", "HostSubnet"}, {"pods[", "Pod"}, {"services[", "Service"}, {"endpointSlices[", "EndpointSlice"},
	}
	for _, p := range prefixes {
		rest, ok := strings.CutPrefix(path, p.prefix)
		if !ok {
			continue
		}
		name, _, ok := strings.Cut(rest, "]")
		if !ok {
			return Source{}, false
		}
		ns, n, namespaced := strings.Cut(name, "/")
		if !namespaced {
			ns, n = "", name
		}
		s, ok := st.Sources[objectKey(p.kind, ns, n)]
		return s, ok
	}
	return Source{}, false
}
