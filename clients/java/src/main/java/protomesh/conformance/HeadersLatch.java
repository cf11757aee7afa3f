package protomesh.conformance;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.ForwardingClientCallListener;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Lets a caller wait for a call's response headers, which a blocking stub's iterator does not expose.
 * The watch's server sends them once it is subscribed, so an event caused after they arrive is delivered.
 */
final class HeadersLatch implements ClientInterceptor {
  private final CountDownLatch arrived = new CountDownLatch(1);
  private volatile Status closedFirst;

  @Override
  public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
      MethodDescriptor<ReqT, RespT> method, CallOptions options, Channel next) {
    return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
      @Override
      public void start(Listener<RespT> listener, Metadata headers) {
        super.start(new ForwardingClientCallListener.SimpleForwardingClientCallListener<>(listener) {
          @Override
          public void onHeaders(Metadata received) {
            arrived.countDown();
            super.onHeaders(received);
          }

          @Override
          public void onClose(Status status, Metadata trailers) {
            if (arrived.getCount() > 0) {
              closedFirst = status;
              arrived.countDown();
            }
            super.onClose(status, trailers);
          }
        }, headers);
      }
    };
  }

  /** Waits for the headers: null once they came, else the status the call ended with before them. */
  Status await(long timeoutMs) throws InterruptedException {
    if (!arrived.await(timeoutMs, TimeUnit.MILLISECONDS)) {
      return Status.DEADLINE_EXCEEDED.withDescription("no headers within " + timeoutMs + " ms");
    }
    return closedFirst;
  }
}
