-- Runs before every other filter. Requests: mark REST (non-gRPC) calls in dynamic metadata so local replies to
-- them get a JSON body, and buffer their body: the transcoder streams it, so only buffering enforces the size
-- limit (Envoy answers 413 past the listener's buffer limit). Remove what only the gateway may set.
-- Responses: a JSON client never sees grpc-* headers; a gRPC client keeps them (its status lives there).
-- MAX_TOKEN_BYTES is defined above this script by listener.py (0: the gateway verifies no token).
local GRPC = "application/grpc"
-- The verified token payload jwt_authn forwards to services; a client's own must never reach one.
local CLAIMS = "x-protomesh-claims"
-- What local_ratelimit adds to a reply it limited (edge_filters.RATE_LIMITED_HEADER), and its draft headers.
local RATE_LIMITED = "x-protomesh-rate-limited"
local RATE_LIMIT_HEADERS = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}
-- A well-formed token that no issuer signed: jwt_authn rejects it like any other bad token.
local UNVERIFIABLE = "Bearer e30.e30.oversized"

local function is_grpc(headers)
  local content_type = headers:get("content-type")
  return content_type ~= nil and content_type:sub(1, #GRPC) == GRPC
end

-- x-envoy-* headers are the gateway's own: none a client sends reaches a service, none reaches a client.
local function strip_envoy_headers(headers)
  local found = {}
  for key, _ in pairs(headers) do
    if key:sub(1, 8) == "x-envoy-" then
      found[#found + 1] = key
    end
  end
  for _, key in ipairs(found) do
    headers:remove(key)
  end
end

-- A token too large to forward as claims is refused the way every bad token is: the client learns no more.
local function refuse_oversized_token(headers)
  local authorization = headers:get("authorization")
  if MAX_TOKEN_BYTES > 0 and authorization ~= nil and #authorization > MAX_TOKEN_BYTES then
    headers:replace("authorization", UNVERIFIABLE)
  end
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  strip_envoy_headers(headers)
  headers:remove(CLAIMS)
  refuse_oversized_token(headers)
  if not is_grpc(headers) then
    request_handle:streamInfo():dynamicMetadata():set("protomesh.gateway", "rest", true)
    request_handle:body()
  end
end

-- A shed call (503: over a service's circuit breaker, or its instance's concurrency bound) comes back after this.
local SHED_RETRY_AFTER_S = "1"

-- A limited call learns when to come back: the seconds until its bucket refills, at least one.
local function retry_after(headers)
  if headers:get(":status") == "503" and headers:get("retry-after") == nil then
    headers:add("retry-after", SHED_RETRY_AFTER_S)
  end
  if headers:get(RATE_LIMITED) ~= nil then
    local reset = tonumber(headers:get("x-ratelimit-reset") or "1") or 1
    headers:replace("retry-after", tostring(math.max(1, math.ceil(reset))))
    headers:remove(RATE_LIMITED)
  end
  for _, key in ipairs(RATE_LIMIT_HEADERS) do
    headers:remove(key)
  end
end

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  strip_envoy_headers(headers)
  retry_after(headers)
  if not is_grpc(headers) then
    headers:remove("grpc-status")
    headers:remove("grpc-message")
    headers:remove("grpc-status-details-bin")
    headers:remove("grpc-encoding")
    headers:remove("grpc-accept-encoding")
  end
end
