--[[
  Merges a batch of learned phase durations into the shared statistics, and returns all of them,
  so that one round trip both publishes this replica's samples and refreshes its snapshot.
  Each field is a decaying histogram on a fixed log grid (src/store/duration-codec.ts holds the same
  arithmetic and the layout): the weights held decay once per new sample, then every new sample
  adds 1 to its bucket. A value this version cannot read is started afresh rather than trusted.

  KEYS[1] durations  hash, "<type>|<phase>" -> "v1|<updatedAtMs>|<samples>|<w0,w1,...>"

  ARGV[1] now (ms)
  ARGV[2] number of buckets
  ARGV[3] decay factor per sample, in (0, 1]
  ARGV[4..] triples: field, samples in this batch, "bucket:count,bucket:count,..."

  Returns the whole hash as a flat field/value array (HGETALL)
]]
local rcall = redis.call
local now = ARGV[1]
local buckets = tonumber(ARGV[2])
local decay = tonumber(ARGV[3])

local function parse(raw)
  if not raw then return nil end
  local version, updatedAt, samples, list = string.match(raw, "^(v1)|(%d+)|(%d+)|([%d%.,e%+%-]+)$")
  if not version then return nil end
  local weights = {}
  for w in string.gmatch(list, "[^,]+") do
    weights[#weights + 1] = tonumber(w) or 0
  end
  if #weights ~= buckets then return nil end
  return tonumber(samples), weights
end

local function format(w)
  if w < 1e-4 then return "0" end
  return string.format("%.6g", w)
end

for i = 4, #ARGV, 3 do
  local field = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local samples, weights = parse(rcall("HGET", KEYS[1], field))
  if not samples then
    samples = 0
    weights = {}
    for b = 1, buckets do weights[b] = 0 end
  end
  local factor = decay ^ n
  for b = 1, buckets do weights[b] = weights[b] * factor end
  for bucket, count in string.gmatch(ARGV[i + 2], "(%d+):(%d+)") do
    local b = tonumber(bucket) + 1
    if b >= 1 and b <= buckets then weights[b] = weights[b] + tonumber(count) end
  end
  local out = {}
  for b = 1, buckets do out[b] = format(weights[b]) end
  rcall("HSET", KEYS[1], field, "v1|" .. now .. "|" .. (samples + n) .. "|" .. table.concat(out, ","))
end
return rcall("HGETALL", KEYS[1])
