-- wrk script of the benchmark: one method, one body, a fresh bearer token per request.
-- args: METHOD BODY_FILE|- TOKENS_FILE|- CYCLE(0|1) ["Header: value" ...]
-- Tokens are used in file order; with CYCLE=0 running out is counted (the reused token gets 401).
-- Run with one wrk thread (-t1): tokens are not split between threads.

tokens = {}
next_token = 1
cycle = false
exhausted = 0
threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = args[1]
  if args[2] ~= "-" then
    local f = assert(io.open(args[2], "rb"))
    wrk.body = f:read("*a")
    f:close()
    wrk.headers["Content-Type"] = "application/json"
  end
  if args[3] ~= "-" then
    for line in io.lines(args[3]) do
      if #line > 0 then tokens[#tokens + 1] = line end
    end
  end
  cycle = args[4] == "1"
  for i = 5, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
  end
end

function request()
  if #tokens > 0 then
    if next_token > #tokens then
      if cycle then
        next_token = 1
      else
        exhausted = exhausted + 1
        next_token = #tokens
      end
    end
    wrk.headers["Authorization"] = "Bearer " .. tokens[next_token]
    next_token = next_token + 1
  end
  return wrk.format()
end

function done(summary, latency, requests)
  local spent = 0
  for _, thread in ipairs(threads) do
    spent = spent + (thread:get("exhausted") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"tokens_exhausted":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout, spent))
end
