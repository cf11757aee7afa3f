-- Runs before the gRPC-JSON transcoder. Requests: mark REST (non-gRPC) calls in dynamic metadata so
-- local replies to them get a JSON body, and buffer their body: the transcoder streams it, so only
-- buffering enforces the size limit (Envoy answers 413 past the listener's buffer limit).
-- Responses: a JSON client never sees grpc-* headers; a gRPC client keeps them (its status lives there).
local GRPC = "application/grpc"

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

function envoy_on_request(request_handle)
  strip_envoy_headers(request_handle:headers())
  if not is_grpc(request_handle:headers()) then
    request_handle:streamInfo():dynamicMetadata():set("protomesh.gateway", "rest", true)
    request_handle:body()
  end
end

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  strip_envoy_headers(headers)
  if not is_grpc(headers) then
    headers:remove("grpc-status")
    headers:remove("grpc-message")
    headers:remove("grpc-status-details-bin")
    headers:remove("grpc-encoding")
    headers:remove("grpc-accept-encoding")
  end
end
