-- wrk script of `python -m stress backends`: POST /api/sales, each with its own
-- Idempotency-Key, for one seller or round-robin over several.
-- wrk ... -s wrk_sales.lua URL -- TOKENS(comma-separated) KEY_PREFIX AMOUNT PHONE_BASE
-- done() prints one line, "wrk-json {...}": requests, statuses, errors, and the
-- latency at every 0.1 percentile (in microseconds), so that the harness can merge
-- the latencies of the two wrk processes it runs (one per app server).

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  tokens = {}
  for token in string.gmatch(args[1], "[^,]+") do
    table.insert(tokens, "Bearer " .. token)
  end
  prefix = args[2] .. "-" .. tid .. "-"
  amount = tonumber(args[3])
  phone_base = tonumber(args[4]) + tid * 1000003
  sent = 0
  statuses = {}
end

function request()
  sent = sent + 1
  local body = string.format('{"phone": "0912%07d", "amount": %d}',
                             (phone_base + sent) % 10000000, amount)
  return wrk.format("POST", "/api/sales", {
    ["Authorization"] = tokens[(sent - 1) % #tokens + 1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. sent,
  }, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts, total_sent = {}, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local cuts = {}
  for i = 1, 1000 do
    table.insert(cuts, string.format("%d", latency:percentile(i / 10)))
  end
  local e = summary.errors
  io.write(string.format(
    'wrk-json {"requests": %d, "sent": %d, "seconds": %.6f, "statuses": {%s}, '
    .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
    .. '"latency_us": [%s]}\n',
    summary.requests, total_sent, summary.duration / 1e6, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(cuts, ",")))
end
