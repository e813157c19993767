// Command kubevirt-crds prints the CustomResourceDefinitions that KubeVirt's virt-operator creates at run time
// (KubeVirt ships no static CRD files), as one multi-document YAML stream on stdout. Tests install them into a
// bare kube-apiserver so that VirtualMachine objects are validated by KubeVirt's real OpenAPI schema.
package main

import (
	"fmt"
	"os"

	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"sigs.k8s.io/yaml"
)

func main() {
	constructors := []func() (*extv1.CustomResourceDefinition, error){
		components.NewVirtualMachineCrd,
		components.NewVirtualMachineInstanceCrd,
		components.NewVirtualMachineInstanceMigrationCrd,
		components.NewKubeVirtCrd,
	}
	for _, construct := range constructors {
		crd, err := construct()
		if err != nil {
			fmt.Fprintln(os.Stderr, "kubevirt-crds:", err)
			os.Exit(1)
		}
		data, err := yaml.Marshal(crd)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kubevirt-crds:", err)
			os.Exit(1)
		}
		// The status and the null creationTimestamp are output-only; the server drops them anyway.
		var doc map[string]interface{}
		if err := yaml.Unmarshal(data, &doc); err != nil {
			fmt.Fprintln(os.Stderr, "kubevirt-crds:", err)
			os.Exit(1)
		}
		delete(doc, "status")
		if meta, ok := doc["metadata"].(map[string]interface{}); ok {
			delete(meta, "creationTimestamp")
		}
		if data, err = yaml.Marshal(doc); err != nil {
			fmt.Fprintln(os.Stderr, "kubevirt-crds:", err)
			os.Exit(1)
		}
		fmt.Printf("---\n%s", data)
	}
}
