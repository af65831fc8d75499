--[[
  Claims up to `limit` due jobs under a lease and returns their recorded state.

  The lease is the schedule itself: a claimed job's score becomes `leaseUntil`, so if this
  replica dies the job is simply due again when the lease runs out. The claimed score is the
  lease token that applyDecisions and releaseLeases compare against. Jobs never polled
  (score 0) sort first, so a new job is not stuck behind a backlog.

  KEYS[1] schedule  zset, job id -> due time in ms
  KEYS[2] state     hash, job id -> "<version>|<json>"

  ARGV[1] now (ms)
  ARGV[2] limit
  ARGV[3] leaseUntil (ms): now + lease

  Returns { { id, ... }, { state or false, ... }, next due score or false }
]]
local rcall = redis.call
local schedule, state = KEYS[1], KEYS[2]

local ids = rcall("ZRANGE", schedule, "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, tonumber(ARGV[2]))
if #ids == 0 then
  local first = rcall("ZRANGE", schedule, 0, 0, "WITHSCORES")
  return { {}, {}, first[2] or false }
end

local args = { "XX" }
for i, id in ipairs(ids) do
  args[2 * i] = ARGV[3]
  args[2 * i + 1] = id
end
rcall("ZADD", schedule, unpack(args))
return { ids, rcall("HMGET", state, unpack(ids)), false }
