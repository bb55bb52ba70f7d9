-- wrk script: POST the same multipart image to /detect (closed loop), for cross-checking `bench load --concurrency`.
--
--   wrk -c 8 -t 1 -d 10s --latency -s tests/benchmarks/wrk_detect.lua http://127.0.0.1:8007/detect -- IMAGE
--
-- The body is built once per thread in init(); wrk then re-sends it. Field "file", as the service expects.

local boundary = "bench-wrk-boundary-7b3f"

local function content_type(name)
  local lower = name:lower()
  if lower:match("%.png$") then return "image/png" end
  if lower:match("%.webp$") then return "image/webp" end
  if lower:match("%.gif$") then return "image/gif" end
  if lower:match("%.bmp$") then return "image/bmp" end
  return "image/jpeg"
end

function init(args)
  local path = args[1] or os.getenv("BENCH_WRK_IMAGE")
  assert(path, "pass the image path after --, or set BENCH_WRK_IMAGE")
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  local name = path:match("([^/]+)$")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
  wrk.body = "--" .. boundary .. "\r\n"
    .. "Content-Disposition: form-data; name=\"file\"; filename=\"" .. name .. "\"\r\n"
    .. "Content-Type: " .. content_type(name) .. "\r\n\r\n"
    .. data .. "\r\n"
    .. "--" .. boundary .. "--\r\n"
end
