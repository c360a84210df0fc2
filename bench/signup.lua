-- wrk script of bench/signup.py: every request a new address from its own client
-- address (an IPv6 /64 of its own in X-Forwarded-For, as a trusted proxy would send
-- it; the app counts IPv6 clients by /64), in the documentation range 3fff::/20 with
-- the run's number in it, so no two runs share a client. The addresses are only
-- header text: nothing is ever sent to them.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = args[1] or "r"
  run = tonumber(args[2] or "0") % 4096
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-Forwarded-For"] = string.format("3fff:%x:%x:%x::1", run, id * 256 + math.floor(counter / 65536) % 256,
                                        counter % 65536),
    ["User-Agent"] = "Mozilla/5.0 (bench)",
    ["Referer"] = "https://news.example.com/2026/12/01/storm-hits-the-coast?utm_source=push&utm_medium=web&utm_campaign=storm",
  }
  local body = string.format('{"email": "%s-%d-%d@example.com", "tz": "Europe/London"}', prefix, id, counter)
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
