// Command grpc_gateway is the peer of protomesh's Envoy gateway in bench figure p3g: grpc-gateway's reverse proxy,
// generated from the acme contracts with protoc-gen-grpc-gateway, serving their REST API in front of one backend.
//
//	scripts/bootstrap.sh grpcgateway   # generates the code into gen/grpcgateway, builds .tools/bin/bench-grpc-gateway
//	GOMAXPROCS=1 taskset -c 1 .tools/bin/bench-grpc-gateway --listen 127.0.0.1:8081 --backend 127.0.0.1:50051
//
// Its JSON is what the mesh's Envoy transcoder answers (gateway_envoy/listener.py PRINT_OPTIONS): protojson's
// names and forms (lowerCamelCase, int64 as strings, enums by name, RFC 3339 times), fields without presence printed
// at their default value (`"nextPageToken": ""`, `"details": []`), unset messages left out, unknown request fields
// dropped. It speaks plaintext gRPC to the backend, as the plaintext gateway does, and stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	notificationsv1 "protomesh/gen/grpcgateway/acme/notifications/v1"
	ordersv1 "protomesh/gen/grpcgateway/acme/orders/v1"
	usersv1 "protomesh/gen/grpcgateway/acme/users/v1"
)

const (
	// A client that has not sent its headers by then is dropped (net/http waits forever by default).
	readHeaderTimeout = 10 * time.Second
	// Requests in flight at SIGTERM get this long to finish.
	shutdownGrace = 5 * time.Second
)

// register is the generated Register<Service>HandlerFromEndpoint of every service the proxy serves.
type register func(context.Context, *runtime.ServeMux, string, []grpc.DialOption) error

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address host:port the REST API is served on")
	backend := flag.String("backend", "127.0.0.1:50051", "gRPC backend host:port every service is proxied to")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := serve(ctx, *listen, *backend); err != nil {
		log.Fatalf("bench-grpc-gateway: %v", err)
	}
}

// newMux is the REST API: grpc-gateway's ServeMux with Envoy-like JSON, every service proxied to backend.
func newMux(ctx context.Context, backend string) (*runtime.ServeMux, error) {
	// grpc-gateway's default marshaler emits every unpopulated field, unset messages as null. The gateway's
	// always_print_primitive_fields is protojson's EmitDefaultValues: defaults of fields without presence only.
	marshaler := &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitDefaultValues: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}}
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler))
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	for _, add := range []register{
		usersv1.RegisterUserServiceHandlerFromEndpoint,
		ordersv1.RegisterOrderServiceHandlerFromEndpoint,
		notificationsv1.RegisterNotificationServiceHandlerFromEndpoint,
	} {
		if err := add(ctx, mux, backend, dial); err != nil {
			return nil, err
		}
	}
	return mux, nil
}

func serve(ctx context.Context, listen, backend string) error {
	mux, err := newMux(ctx, backend)
	if err != nil {
		return err
	}
	listener, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout}
	done := make(chan error, 1)
	go func() { done <- server.Serve(listener) }()
	log.Printf("bench-grpc-gateway: REST on %s, gRPC backend %s", listener.Addr(), backend)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := server.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
