// Command descriptors writes the FileDescriptorSet of the contracts grpc-go's interop client speaks
// (grpc.testing's TestService and ORCA's OpenRcaService), with every file they import.
//
// grpc-go ships these contracts only as generated Go, so the descriptors are taken from the very
// module the client is built from: the tests can never drift from what the client sends.
//
//	go run . -out interop.binpb
package main

import (
	"flag"
	"log"
	"os"

	orcaservice "github.com/cncf/xds/go/xds/service/orca/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func main() {
	out := flag.String("out", "", "where to write the FileDescriptorSet (binary)")
	flag.Parse()
	if *out == "" {
		log.Fatal("-out is required")
	}
	roots := []protoreflect.FileDescriptor{
		testpb.File_grpc_testing_test_proto,
		orcaservice.File_xds_service_orca_v3_orca_proto,
	}
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	for _, root := range roots {
		add(set, seen, root)
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(set)
	if err != nil {
		log.Fatalf("marshal: %v", err)
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		log.Fatalf("write %s: %v", *out, err)
	}
}

// add appends file after its imports (protoc's --descriptor_set_in wants dependencies first).
func add(set *descriptorpb.FileDescriptorSet, seen map[string]bool, file protoreflect.FileDescriptor) {
	if seen[file.Path()] {
		return
	}
	seen[file.Path()] = true
	imports := file.Imports()
	for i := 0; i < imports.Len(); i++ {
		add(set, seen, imports.Get(i).FileDescriptor)
	}
	set.File = append(set.File, protodesc.ToFileDescriptorProto(file))
}
