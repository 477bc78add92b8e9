-- wrk script: nodes PUT a reading as the firmware sends it, cycling over many registered nodes.
--
--   wrk -t2 -c50 -d5s --latency -s put_reading.lua http://127.0.0.1:PORT -- NODES_FILE close|keep-alive THREADS
--
-- NODES_FILE: one node a line, "<name><TAB><Authorization value>", the value as the firmware sends it
-- (" Basic <base64(login:password)>", leading space included). "close" adds `Connection: close` to
-- every request, so each request opens a new connection, as a node waking from deep sleep does.
-- Every request is built once in init() (wrk.format), so a request costs wrk no Lua string work;
-- each thread starts at its own place in the list. response() counts the answers by status, and
-- done() prints one line "wrk-json {...}" with the figures (latencies in microseconds).

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local requests = {}
local n = 0
local i = 0
statuses = {}

function init(args)
   local path, mode, nthreads = args[1], args[2] or "close", tonumber(args[3] or "1")
   local k = 0
   for line in io.lines(path) do
      local name, auth = line:match("^([^\t]+)\t(.*)$")
      if name then
         k = k + 1
         -- DHT22 style readings, different per node: "23.4 45.1"
         local body = string.format('{"name": "%s", "data": "%.1f %.1f"}', name, 15 + (k % 150) / 10, 30 + (k % 500) / 10)
         local headers = {["Authorization"] = auth, ["Content-Type"] = "application/json"}
         if mode == "close" then headers["Connection"] = "close" end
         requests[k] = wrk.format("PUT", "/api/nodes/" .. name, headers, body)
      end
   end
   n = k
   if n == 0 then error("no nodes in " .. path) end
   i = math.floor(id * n / math.max(1, nthreads))  -- the threads start apart in the list
end

function request()
   i = i + 1
   if i > n then i = 1 end
   return requests[i]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, reqs)
   local merged = {}
   for _, thread in ipairs(threads) do
      local counted = thread:get("statuses")
      if counted then
         for code, count in pairs(counted) do
            merged[tostring(code)] = (merged[tostring(code)] or 0) + count
         end
      end
   end
   local codes = {}
   for code, count in pairs(merged) do
      table.insert(codes, string.format('"%s": %d', code, count))
   end
   local e = summary.errors
   io.write(string.format(
      'wrk-json {"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}, "statuses": {%s}}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      table.concat(codes, ", ")))
end
