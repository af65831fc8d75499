--[[
  Drops the recorded state of jobs that were done with more than the state TTL ago. A job a
  producer added again in the meantime is scheduled, so its state is kept (and re-armed when it
  is done with again): dropping it would replay its transitions.

  KEYS[1] expiry    zset, job id -> when its state may be dropped
  KEYS[2] state     hash
  KEYS[3] schedule  zset
  KEYS[4] finals    hash, job id -> entry id of its final event

  ARGV[1] now (ms)
  ARGV[2] limit

  Returns the number of states dropped
]]
local rcall = redis.call
local ids = rcall("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, tonumber(ARGV[2]))
local dropped = 0
for _, id in ipairs(ids) do
  rcall("ZREM", KEYS[1], id)
  if not rcall("ZSCORE", KEYS[3], id) then
    rcall("HDEL", KEYS[2], id)
    rcall("HDEL", KEYS[4], id)
    dropped = dropped + 1
  end
end
return dropped
