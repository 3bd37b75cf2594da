-- The request mix of the load benchmark: chat (whole and streamed), Responses,
-- Anthropic messages and embeddings, in turn. The same script drives the mock
-- upstream directly and the gateway, so both see identical requests.
local key = os.getenv("HALBERD_KEY") or "none"
local prompt = "Summarise the quarterly report in three bullet points, keeping figures exact."
local requests = {
  {"/v1/chat/completions", '{"model":"MODEL","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"' .. prompt .. '"}]}'},
  {"/v1/chat/completions", '{"model":"MODEL","stream":true,"messages":[{"role":"user","content":"' .. prompt .. '"}]}'},
  {"/v1/responses", '{"model":"MODEL","input":"' .. prompt .. '"}'},
  {"/v1/messages", '{"model":"mock-claude","max_tokens":256,"messages":[{"role":"user","content":"' .. prompt .. '"}]}'},
  {"/v1/embeddings", '{"model":"MODEL","input":["' .. prompt .. '"]}'},
}
local model = os.getenv("BENCH_MODEL") or "mock-1"
local i = 0
request = function()
  i = (i % #requests) + 1
  local r = requests[i]
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key, ["x-api-key"] = key}
  return wrk.format("POST", r[1], headers, (r[2]:gsub("MODEL", model)))
end

local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_us=%d p90_us=%d p99_us=%d requests=%d non200=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(90), latency:percentile(99),
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
