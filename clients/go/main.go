// Command conformance runs the protomesh conformance scenario against a gateway over native gRPC.
//
//	TOKEN=$(../../.venv/bin/protomesh token --sub ada --scope users:read --scope orders:write --scope notifications:read)
//	go run . --target 127.0.0.1:8080 --ca-file ../../var/mesh/pki/ca.pem --token "$TOKEN"
//
// It speaks TLS (trusting --ca-file, else the system's roots), sends the token on every call, prints one line
// per step and exits 1 on the first step that does not get what it expects.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	notificationsv1 "protomesh/gen/go/acme/notifications/v1"
	ordersv1 "protomesh/gen/go/acme/orders/v1"
	usersv1 "protomesh/gen/go/acme/users/v1"
)

const (
	// Every unary call gets this deadline; a healthy local mesh answers in milliseconds.
	callTimeout = 5 * time.Second
	// How long the watch may take to deliver the order's notification (the gateway cuts streams at 15 s).
	watchTimeout = 5 * time.Second
)

func main() {
	target := flag.String("target", "127.0.0.1:8080", "gateway address host:port")
	caFile := flag.String("ca-file", "", "PEM file of the CA to trust (default: the system's roots)")
	token := flag.String("token", "", "token sent as 'authorization: Bearer TOKEN' on every call")
	flag.Parse()

	conn, err := dial(*target, *caFile, *token)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL connect to %s: %v\n", *target, err)
		os.Exit(1)
	}
	defer conn.Close()

	s := &scenario{
		users:         usersv1.NewUserServiceClient(conn),
		orders:        ordersv1.NewOrderServiceClient(conn),
		notifications: notificationsv1.NewNotificationServiceClient(conn),
		email:         "conformance-go-" + randomHex(6) + "@example.com",
	}
	if err := s.run(context.Background()); err != nil {
		conn.Close()
		os.Exit(1)
	}
	fmt.Printf("all %d steps ok\n", len(s.steps()))
}

// dial connects over TLS, trusting caFile (empty: the system's roots), with the token on every call.
func dial(target, caFile, token string) (*grpc.ClientConn, error) {
	creds := credentials.NewTLS(nil)
	if caFile != "" {
		var err error
		if creds, err = credentials.NewClientTLSFromFile(caFile, ""); err != nil {
			return nil, err
		}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	return grpc.NewClient(target, opts...)
}

// bearer sends a token on every call, over TLS only (grpc refuses to send it on a plaintext connection).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

type step struct {
	name string
	run  func(ctx context.Context) (string, error)
}

// scenario holds what the steps pass on to each other: the user, its watch and its order.
type scenario struct {
	users         usersv1.UserServiceClient
	orders        ordersv1.OrderServiceClient
	notifications notificationsv1.NotificationServiceClient
	email         string

	userID      string
	orderID     string
	watch       notificationsv1.NotificationService_WatchNotificationsClient
	cancelWatch context.CancelFunc
}

func (s *scenario) steps() []step {
	return []step{
		{"create user", s.createUser},
		{"duplicate email", s.duplicateEmail},
		{"unknown id", s.unknownID},
		{"invalid email", s.invalidEmail},
		{"watch notifications", s.openWatch},
		{"place order", s.placeOrder},
		{"receive notification", s.receiveNotification},
		{"cancel order", s.cancelOrder},
		{"1 ms deadline on a watch", s.tinyDeadline},
	}
}

func (s *scenario) run(ctx context.Context) error {
	defer func() {
		if s.cancelWatch != nil {
			s.cancelWatch()
		}
	}()
	for _, st := range s.steps() {
		detail, err := st.run(ctx)
		if err != nil {
			fmt.Printf("FAIL %s: %v\n", st.name, err)
			return err
		}
		fmt.Printf("ok   %s %s\n", st.name, detail)
	}
	return nil
}

func (s *scenario) createUser(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := s.users.CreateUser(ctx, &usersv1.CreateUserRequest{
		User: &usersv1.User{Email: s.email, DisplayName: "Ada"}})
	if err != nil {
		return "", fmt.Errorf("expected OK, got %s", describe(err))
	}
	s.userID = resp.GetUser().GetUserId()
	if s.userID == "" {
		return "", errors.New("expected a user id, got an empty one")
	}
	return fmt.Sprintf("%s (%s)", s.userID, s.email), nil
}

func (s *scenario) duplicateEmail(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := s.users.CreateUser(ctx, &usersv1.CreateUserRequest{
		User: &usersv1.User{Email: s.email, DisplayName: "Ada again"}})
	return expectCode(err, codes.AlreadyExists)
}

func (s *scenario) unknownID(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := s.users.GetUser(ctx, &usersv1.GetUserRequest{UserId: "no-such-user-" + randomHex(6)})
	return expectCode(err, codes.NotFound)
}

func (s *scenario) invalidEmail(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := s.users.CreateUser(ctx, &usersv1.CreateUserRequest{
		User: &usersv1.User{Email: "not-an-email", DisplayName: "Ada"}})
	if _, err := expectCode(err, codes.InvalidArgument); err != nil {
		return "", err
	}
	// The field violations travel in grpc-status-details-bin, decoded by Details().
	for _, detail := range status.Convert(err).Details() {
		if bad, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range bad.GetFieldViolations() {
				if v.GetField() == "user.email" {
					return fmt.Sprintf("-> INVALID_ARGUMENT, BadRequest %s: %s", v.GetField(), v.GetDescription()), nil
				}
			}
		}
	}
	return "", fmt.Errorf("expected a BadRequest field violation for user.email, got details %v",
		status.Convert(err).Details())
}

func (s *scenario) openWatch(ctx context.Context) (string, error) {
	ctx, s.cancelWatch = context.WithTimeout(ctx, watchTimeout)
	watch, err := s.notifications.WatchNotifications(ctx, &notificationsv1.WatchNotificationsRequest{UserId: s.userID})
	if err != nil {
		return "", fmt.Errorf("expected a stream, got %s", describe(err))
	}
	// The server sends headers once the watch is subscribed: anything recorded from now on reaches us.
	if _, err := watch.Header(); err != nil {
		return "", fmt.Errorf("expected the stream's headers, got %s", describe(err))
	}
	s.watch = watch
	return "for " + s.userID, nil
}

func (s *scenario) placeOrder(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := s.orders.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Order: &ordersv1.Order{
		UserId:    s.userID,
		LineItems: []*ordersv1.LineItem{{Sku: "book", Quantity: 2, UnitPriceCents: 1250}},
	}})
	if err != nil {
		return "", fmt.Errorf("expected OK, got %s", describe(err))
	}
	order := resp.GetOrder()
	if order.GetTotalCents() != 2500 || order.GetState() != ordersv1.OrderState_ORDER_STATE_CREATED {
		return "", fmt.Errorf("expected total 2500 in ORDER_STATE_CREATED, got %d in %s",
			order.GetTotalCents(), order.GetState())
	}
	s.orderID = order.GetOrderId()
	return fmt.Sprintf("%s (total %d cents)", s.orderID, order.GetTotalCents()), nil
}

func (s *scenario) receiveNotification(context.Context) (string, error) {
	for {
		msg, err := s.watch.Recv()
		if err != nil {
			return "", fmt.Errorf("expected a notification naming %s within %s, got %s", s.orderID, watchTimeout,
				describe(err))
		}
		if text := msg.GetNotification().GetText(); strings.Contains(text, s.orderID) {
			s.cancelWatch()
			return fmt.Sprintf("%q", text), nil
		}
	}
}

func (s *scenario) cancelOrder(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := s.orders.CancelOrder(ctx, &ordersv1.CancelOrderRequest{OrderId: s.orderID, Reason: "conformance run"})
	if err != nil {
		return "", fmt.Errorf("expected OK, got %s", describe(err))
	}
	if state := resp.GetOrder().GetState(); state != ordersv1.OrderState_ORDER_STATE_CANCELLED {
		return "", fmt.Errorf("expected ORDER_STATE_CANCELLED, got %s", state)
	}
	return fmt.Sprintf("%s -> %s", s.orderID, resp.GetOrder().GetState()), nil
}

// tinyDeadline holds a call that cannot finish in 1 ms to that deadline. A unary GetUser through a local
// gateway can answer within 1 ms, so the call is a watch, which only ends when its deadline does.
func (s *scenario) tinyDeadline(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	watch, err := s.notifications.WatchNotifications(ctx, &notificationsv1.WatchNotificationsRequest{UserId: s.userID})
	for err == nil {
		_, err = watch.Recv()
	}
	return expectCode(err, codes.DeadlineExceeded)
}

// expectCode checks that a call failed with want and says what came back otherwise.
func expectCode(err error, want codes.Code) (string, error) {
	if got := status.Code(err); got != want {
		return "", fmt.Errorf("expected %s, got %s", codeName(want), describe(err))
	}
	return "-> " + codeName(want), nil
}

// describe names a call's outcome the way the gRPC spec spells codes (NOT_FOUND, not NotFound).
func describe(err error) string {
	st := status.Convert(err)
	if st.Code() == codes.OK {
		return "OK"
	}
	return fmt.Sprintf("%s (%q)", codeName(st.Code()), st.Message())
}

func codeName(c codes.Code) string {
	if c == codes.OK {
		return "OK"
	}
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
