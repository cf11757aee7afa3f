package protomesh.conformance;

import acme.notifications.v1.NotificationServiceGrpc;
import acme.notifications.v1.NotificationsService.WatchNotificationsRequest;
import acme.notifications.v1.NotificationsService.WatchNotificationsResponse;
import acme.orders.v1.OrderServiceGrpc;
import acme.orders.v1.Orders.LineItem;
import acme.orders.v1.Orders.Order;
import acme.orders.v1.Orders.OrderState;
import acme.orders.v1.OrdersService.CancelOrderRequest;
import acme.orders.v1.OrdersService.CreateOrderRequest;
import acme.users.v1.UserServiceGrpc;
import acme.users.v1.Users.User;
import acme.users.v1.UsersService.CreateUserRequest;
import acme.users.v1.UsersService.GetUserRequest;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import io.grpc.ClientInterceptors;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.io.File;
import java.io.IOException;
import java.util.Iterator;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

/**
 * The protomesh conformance scenario over native gRPC through the gateway, with grpc-java's blocking stubs.
 *
 * <pre>
 * TOKEN=$(.venv/bin/protomesh token --sub ada --scope users:read --scope orders:write --scope notifications:read)
 * java -jar clients/java/target/conformance.jar --target 127.0.0.1:8080 --ca-file var/mesh/pki/ca.pem --token "$TOKEN"
 * </pre>
 *
 * <p>It speaks TLS (trusting {@code --ca-file}, else the JDK's roots), sends the token on every call, prints one
 * line per step and exits 1 on the first step that does not get what it expects.
 */
public final class Conformance {
  /** Every unary call gets this deadline; a healthy local mesh answers in milliseconds. */
  private static final long CALL_TIMEOUT_MS = 5_000;
  /** How long the watch may take to deliver the order's notification (the gateway cuts streams at 15 s). */
  private static final long WATCH_TIMEOUT_MS = 5_000;

  /** One step of the scenario: it returns what it saw, or throws {@link StepFailed}. */
  private record Step(String name, Action action) {}

  @FunctionalInterface
  private interface Action {
    String run() throws Exception;
  }

  /** What a step expected and what came back instead. */
  static final class StepFailed extends Exception {
    StepFailed(String message) {
      super(message);
    }
  }

  private final UserServiceGrpc.UserServiceBlockingStub users;
  private final OrderServiceGrpc.OrderServiceBlockingStub orders;
  private final NotificationServiceGrpc.NotificationServiceBlockingStub notifications;
  private final String email = "conformance-java-" + UUID.randomUUID().toString().substring(0, 12) + "@example.com";
  private final HeadersLatch watchHeaders = new HeadersLatch();
  private final Context.CancellableContext watchContext = Context.current().withCancellation();
  private String userId;
  private String orderId;
  private Iterator<WatchNotificationsResponse> watch;

  Conformance(io.grpc.Channel channel) {
    users = UserServiceGrpc.newBlockingStub(channel);
    orders = OrderServiceGrpc.newBlockingStub(channel);
    notifications = NotificationServiceGrpc.newBlockingStub(channel);
  }

  List<Step> steps() {
    return List.of(
        new Step("create user", this::createUser),
        new Step("duplicate email", this::duplicateEmail),
        new Step("unknown id", this::unknownId),
        new Step("invalid email", this::invalidEmail),
        new Step("watch notifications", this::openWatch),
        new Step("place order", this::placeOrder),
        new Step("receive notification", this::receiveNotification),
        new Step("cancel order", this::cancelOrder),
        new Step("1 ms deadline on a watch", this::tinyDeadline));
  }

  boolean run() throws Exception {
    try {
      for (Step step : steps()) {
        String detail;
        try {
          detail = step.action().run();
        } catch (StepFailed e) {
          System.out.println("FAIL " + step.name() + ": " + e.getMessage());
          return false;
        }
        System.out.println("ok   " + step.name() + " " + detail);
      }
      return true;
    } finally {
      watchContext.cancel(null);
    }
  }

  private UserServiceGrpc.UserServiceBlockingStub users() {
    return users.withDeadlineAfter(CALL_TIMEOUT_MS, TimeUnit.MILLISECONDS);
  }

  private OrderServiceGrpc.OrderServiceBlockingStub orders() {
    return orders.withDeadlineAfter(CALL_TIMEOUT_MS, TimeUnit.MILLISECONDS);
  }

  private String createUser() throws StepFailed {
    User user = expectOk(() -> users().createUser(CreateUserRequest.newBuilder()
        .setUser(User.newBuilder().setEmail(email).setDisplayName("Ada")).build())).getUser();
    if (user.getUserId().isEmpty()) {
      throw new StepFailed("expected a user id, got an empty one");
    }
    userId = user.getUserId();
    return userId + " (" + email + ")";
  }

  private String duplicateEmail() throws StepFailed {
    expectCode(() -> users().createUser(CreateUserRequest.newBuilder()
        .setUser(User.newBuilder().setEmail(email).setDisplayName("Ada again")).build()), Status.Code.ALREADY_EXISTS);
    return "-> ALREADY_EXISTS";
  }

  private String unknownId() throws StepFailed {
    expectCode(() -> users().getUser(GetUserRequest.newBuilder().setUserId("no-such-user-" + UUID.randomUUID()).build()),
        Status.Code.NOT_FOUND);
    return "-> NOT_FOUND";
  }

  private String invalidEmail() throws StepFailed, InvalidProtocolBufferException {
    StatusRuntimeException error = expectCode(() -> users().createUser(CreateUserRequest.newBuilder()
        .setUser(User.newBuilder().setEmail("not-an-email").setDisplayName("Ada")).build()),
        Status.Code.INVALID_ARGUMENT);
    // The field violations travel in grpc-status-details-bin; StatusProto decodes them into google.rpc.Status.
    com.google.rpc.Status status = StatusProto.fromThrowable(error);
    List<Any> details = status == null ? List.of() : status.getDetailsList();
    for (Any detail : details) {
      if (detail.is(BadRequest.class)) {
        for (BadRequest.FieldViolation v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
          if (v.getField().equals("user.email")) {
            return "-> INVALID_ARGUMENT, BadRequest " + v.getField() + ": " + v.getDescription();
          }
        }
      }
    }
    throw new StepFailed("expected a BadRequest field violation for user.email, got " + details.size() + " detail(s)");
  }

  private String openWatch() throws StepFailed, InterruptedException {
    WatchNotificationsRequest request = WatchNotificationsRequest.newBuilder().setUserId(userId).build();
    // The blocking stream belongs to watchContext, so cancelling that context ends it.
    Context previous = watchContext.attach();
    try {
      watch = notifications.withDeadlineAfter(WATCH_TIMEOUT_MS, TimeUnit.MILLISECONDS)
          .withInterceptors(watchHeaders).watchNotifications(request);
    } finally {
      watchContext.detach(previous);
    }
    // The server sends headers once the watch is subscribed: anything recorded from then on reaches us.
    Status closed = watchHeaders.await(WATCH_TIMEOUT_MS);
    if (closed != null) {
      throw new StepFailed("expected the stream's headers, got " + describe(closed));
    }
    return "for " + userId;
  }

  private String placeOrder() throws StepFailed {
    Order order = expectOk(() -> orders().createOrder(CreateOrderRequest.newBuilder()
        .setOrder(Order.newBuilder().setUserId(userId)
            .addLineItems(LineItem.newBuilder().setSku("book").setQuantity(2).setUnitPriceCents(1250)))
        .build())).getOrder();
    if (order.getTotalCents() != 2500 || order.getState() != OrderState.ORDER_STATE_CREATED) {
      throw new StepFailed("expected total 2500 in ORDER_STATE_CREATED, got " + order.getTotalCents() + " in "
          + order.getState());
    }
    orderId = order.getOrderId();
    return orderId + " (total " + order.getTotalCents() + " cents)";
  }

  private String receiveNotification() throws StepFailed {
    try {
      while (watch.hasNext()) {
        String text = watch.next().getNotification().getText();
        if (text.contains(orderId)) {
          watchContext.cancel(null);
          return "\"" + text + "\"";
        }
      }
    } catch (StatusRuntimeException e) {
      throw new StepFailed("expected a notification naming " + orderId + " within " + WATCH_TIMEOUT_MS + " ms, got "
          + describe(e.getStatus()));
    }
    throw new StepFailed("expected a notification naming " + orderId + ", got the end of the stream");
  }

  private String cancelOrder() throws StepFailed {
    Order order = expectOk(() -> orders().cancelOrder(CancelOrderRequest.newBuilder()
        .setOrderId(orderId).setReason("conformance run").build())).getOrder();
    if (order.getState() != OrderState.ORDER_STATE_CANCELLED) {
      throw new StepFailed("expected ORDER_STATE_CANCELLED, got " + order.getState());
    }
    return orderId + " -> " + order.getState();
  }

  /**
   * A unary GetUser through a local gateway can answer within 1 ms, so the call held to a 1 ms deadline is a
   * watch, which only ends when its deadline does.
   */
  private String tinyDeadline() throws StepFailed {
    WatchNotificationsRequest request = WatchNotificationsRequest.newBuilder().setUserId(userId).build();
    expectCode(() -> {
      Iterator<WatchNotificationsResponse> stream =
          notifications.withDeadlineAfter(1, TimeUnit.MILLISECONDS).watchNotifications(request);
      while (stream.hasNext()) {
        stream.next(); // notifications may arrive before the deadline; only the way the stream ends matters
      }
      return null;
    }, Status.Code.DEADLINE_EXCEEDED);
    return "-> DEADLINE_EXCEEDED";
  }

  @FunctionalInterface
  private interface Call<T> {
    T call();
  }

  private static <T> T expectOk(Call<T> call) throws StepFailed {
    try {
      return call.call();
    } catch (StatusRuntimeException e) {
      throw new StepFailed("expected OK, got " + describe(e.getStatus()));
    }
  }

  /** Runs a call that must fail with {@code want} and returns its error. */
  private static StatusRuntimeException expectCode(Call<?> call, Status.Code want) throws StepFailed {
    try {
      call.call();
    } catch (StatusRuntimeException e) {
      if (e.getStatus().getCode() == want) {
        return e;
      }
      throw new StepFailed("expected " + want + ", got " + describe(e.getStatus()));
    }
    throw new StepFailed("expected " + want + ", got OK");
  }

  private static String describe(Status status) {
    return status.getCode() + " (\"" + status.getDescription() + "\")";
  }

  /** TLS, trusting the CA file when one is given and the JDK's roots otherwise. */
  static ManagedChannel dial(Options options) throws IOException {
    TlsChannelCredentials.Builder tls = TlsChannelCredentials.newBuilder();
    if (options.caFile() != null) {
      tls.trustManager(new File(options.caFile()));
    }
    return Grpc.newChannelBuilder(options.target(), tls.build()).build();
  }

  /** Command-line options, spelled the same in every client. */
  record Options(String target, String caFile, String token) {
    static Options parse(String[] args) {
      String target = "127.0.0.1:8080";
      String caFile = null;
      String token = null;
      for (int i = 0; i < args.length; i++) {
        String value = i + 1 < args.length ? args[i + 1] : null;
        switch (args[i]) {
          case "--target" -> target = value;
          case "--ca-file" -> caFile = value;
          case "--token" -> token = value;
          default -> throw new IllegalArgumentException("unknown option " + args[i]
              + " (usage: --target HOST:PORT [--ca-file PATH] [--token JWT])");
        }
        if (value == null) {
          throw new IllegalArgumentException(args[i] + " needs a value");
        }
        i++;
      }
      return new Options(target, caFile, token);
    }
  }

  public static void main(String[] args) throws Exception {
    Options options = Options.parse(args);
    ManagedChannel channel = dial(options);
    io.grpc.Channel calls = channel;
    if (options.token() != null) {
      Metadata headers = new Metadata();
      headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + options.token());
      calls = ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(headers));
    }
    Conformance scenario = new Conformance(calls);
    boolean passed;
    try {
      passed = scenario.run();
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    if (passed) {
      System.out.println("all " + scenario.steps().size() + " steps ok");
    }
    System.exit(passed ? 0 : 1);
  }
}
