// The protomesh conformance scenario over native gRPC (Connect's gRPC transport) through the gateway.
//
//   TOKEN=$(.venv/bin/protomesh token --sub ada --scope users:read --scope orders:write --scope notifications:read)
//   node clients/ts/dist/src/conformance.js --target 127.0.0.1:8080 --ca-file var/mesh/pki/ca.pem --token "$TOKEN"
//
// It speaks TLS (trusting --ca-file, else Node's roots), sends the token on every call, prints one line per step
// and exits 1 on the first step that does not get what it expects.
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NotificationService, type WatchNotificationsResponse } from "../gen/acme/notifications/v1/notifications_service_pb.js";
import { OrderState } from "../gen/acme/orders/v1/orders_pb.js";
import { OrderService } from "../gen/acme/orders/v1/orders_service_pb.js";
import { UserService } from "../gen/acme/users/v1/users_service_pb.js";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";

// Every unary call gets this deadline; a healthy local mesh answers in milliseconds.
const CALL_TIMEOUT_MS = 5_000;
// How long the watch may take to deliver the order's notification (the gateway cuts streams at 15 s).
const WATCH_TIMEOUT_MS = 5_000;

type Step = [name: string, run: () => Promise<string>];

class Scenario {
  private readonly users: Client<typeof UserService>;
  private readonly orders: Client<typeof OrderService>;
  private readonly notifications: Client<typeof NotificationService>;
  private readonly email = `conformance-ts-${randomUUID().slice(0, 12)}@example.com`;
  private readonly stopWatch = new AbortController();
  private userId = "";
  private orderId = "";
  private watch?: AsyncIterator<WatchNotificationsResponse>;
  private nextMessage?: Promise<IteratorResult<WatchNotificationsResponse>>;

  constructor(options: { target: string; caFile?: string; token?: string }) {
    const transport = createGrpcTransport({
      baseUrl: `https://${options.target}`,
      nodeOptions: options.caFile ? { ca: readFileSync(options.caFile) } : {},
      interceptors: options.token ? [bearer(options.token)] : [],
      defaultTimeoutMs: CALL_TIMEOUT_MS,
    });
    this.users = createClient(UserService, transport);
    this.orders = createClient(OrderService, transport);
    this.notifications = createClient(NotificationService, transport);
  }

  steps(): Step[] {
    return [
      ["create user", () => this.createUser()],
      ["duplicate email", () => this.duplicateEmail()],
      ["unknown id", () => this.unknownId()],
      ["invalid email", () => this.invalidEmail()],
      ["watch notifications", () => this.openWatch()],
      ["place order", () => this.placeOrder()],
      ["receive notification", () => this.receiveNotification()],
      ["cancel order", () => this.cancelOrder()],
      ["1 ms deadline on a watch", () => this.tinyDeadline()],
    ];
  }

  async run(): Promise<boolean> {
    try {
      for (const [name, run] of this.steps()) {
        let detail: string;
        try {
          detail = await run();
        } catch (err) {
          console.log(`FAIL ${name}: ${err instanceof Error ? err.message : String(err)}`);
          return false;
        }
        console.log(`ok   ${name} ${detail}`);
      }
      return true;
    } finally {
      await this.closeWatch();
    }
  }

  // Connect's stream iterators have no return(): abort the call, then read its end, which clears its timer.
  private async closeWatch(): Promise<void> {
    this.stopWatch.abort();
    await this.watch?.next().catch(() => undefined);
    this.watch = undefined;
  }

  private async createUser(): Promise<string> {
    const { user } = await expectOk(this.users.createUser({ user: { email: this.email, displayName: "Ada" } }));
    if (!user?.userId) throw new Error("expected a user id, got an empty one");
    this.userId = user.userId;
    return `${this.userId} (${this.email})`;
  }

  private async duplicateEmail(): Promise<string> {
    await expectCode(this.users.createUser({ user: { email: this.email, displayName: "Ada again" } }),
      Code.AlreadyExists);
    return "-> ALREADY_EXISTS";
  }

  private async unknownId(): Promise<string> {
    await expectCode(this.users.getUser({ userId: `no-such-user-${randomUUID()}` }), Code.NotFound);
    return "-> NOT_FOUND";
  }

  private async invalidEmail(): Promise<string> {
    const err = await expectCode(this.users.createUser({ user: { email: "not-an-email", displayName: "Ada" } }),
      Code.InvalidArgument);
    // The field violations travel in grpc-status-details-bin; findDetails decodes them.
    const violation = err.findDetails(BadRequestSchema)
      .flatMap((badRequest) => badRequest.fieldViolations)
      .find((v) => v.field === "user.email");
    if (!violation) {
      throw new Error(`expected a BadRequest field violation for user.email, got ${err.details.length} detail(s)`);
    }
    return `-> INVALID_ARGUMENT, BadRequest ${violation.field}: ${violation.description}`;
  }

  private async openWatch(): Promise<string> {
    let headersArrived = (): void => {};
    const headers = new Promise<void>((resolve) => (headersArrived = resolve));
    this.watch = this.notifications.watchNotifications({ userId: this.userId }, {
      timeoutMs: WATCH_TIMEOUT_MS,
      signal: this.stopWatch.signal,
      onHeader: () => headersArrived(),
    })[Symbol.asyncIterator]();
    // The server sends headers once the watch is subscribed: anything recorded from then on reaches us.
    // Asking for the first message is what makes the client read them.
    this.nextMessage = this.watch.next();
    await Promise.race([headers, this.nextMessage.catch((err: unknown) => {
      throw new Error(`expected the stream's headers, got ${describe(err)}`);
    })]);
    return `for ${this.userId}`;
  }

  private async placeOrder(): Promise<string> {
    const { order } = await expectOk(this.orders.createOrder({
      order: { userId: this.userId, lineItems: [{ sku: "book", quantity: 2, unitPriceCents: 1250n }] },
    }));
    if (order?.totalCents !== 2500n || order.state !== OrderState.CREATED) {
      throw new Error(`expected total 2500 in ORDER_STATE_CREATED, got ${order?.totalCents} in ` +
        `ORDER_STATE_${OrderState[order?.state ?? OrderState.UNSPECIFIED]}`);
    }
    this.orderId = order.orderId;
    return `${this.orderId} (total ${order.totalCents} cents)`;
  }

  private async receiveNotification(): Promise<string> {
    for (;;) {
      let result: IteratorResult<WatchNotificationsResponse>;
      try {
        result = await this.nextMessage!;
      } catch (err) {
        throw new Error(`expected a notification naming ${this.orderId} within ${WATCH_TIMEOUT_MS} ms, ` +
          `got ${describe(err)}`);
      }
      if (result.done) throw new Error(`expected a notification naming ${this.orderId}, got the end of the stream`);
      const text = result.value.notification?.text ?? "";
      if (text.includes(this.orderId)) {
        await this.closeWatch();
        return JSON.stringify(text);
      }
      this.nextMessage = this.watch!.next();
    }
  }

  private async cancelOrder(): Promise<string> {
    const { order } = await expectOk(this.orders.cancelOrder({ orderId: this.orderId, reason: "conformance run" }));
    if (order?.state !== OrderState.CANCELLED) {
      throw new Error(`expected ORDER_STATE_CANCELLED, got ORDER_STATE_${OrderState[order?.state ?? 0]}`);
    }
    return `${this.orderId} -> ORDER_STATE_CANCELLED`;
  }

  // A unary GetUser through a local gateway can answer within 1 ms, so the call held to a 1 ms deadline is
  // a watch, which only ends when its deadline does.
  private async tinyDeadline(): Promise<string> {
    const drain = async (): Promise<void> => {
      for await (const _ of this.notifications.watchNotifications({ userId: this.userId }, { timeoutMs: 1 })) {
        // notifications may arrive before the deadline; only the way the stream ends matters
      }
    };
    await expectCode(drain(), Code.DeadlineExceeded);
    return "-> DEADLINE_EXCEEDED";
  }
}

/** Sends `authorization: Bearer TOKEN` on every call. */
function bearer(token: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

async function expectOk<T>(call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (err) {
    throw new Error(`expected OK, got ${describe(err)}`);
  }
}

/** Awaits a call that must fail with `want`, and returns its error. */
async function expectCode(call: Promise<unknown>, want: Code): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    const connectErr = ConnectError.from(err);
    if (connectErr.code === want) return connectErr;
    throw new Error(`expected ${codeName(want)}, got ${describe(err)}`);
  }
  throw new Error(`expected ${codeName(want)}, got OK`);
}

/** A call's failure as the gRPC spec spells codes (NOT_FOUND), with the server's message. */
function describe(err: unknown): string {
  const connectErr = ConnectError.from(err);
  return `${codeName(connectErr.code)} (${JSON.stringify(connectErr.rawMessage)})`;
}

function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      target: { type: "string", default: "127.0.0.1:8080" },
      "ca-file": { type: "string" },
      token: { type: "string" },
    },
  });
  const scenario = new Scenario({ target: values.target, caFile: values["ca-file"], token: values.token });
  if (!(await scenario.run())) return 1;
  console.log(`all ${scenario.steps().length} steps ok`);
  return 0;
}

process.exitCode = await main();
