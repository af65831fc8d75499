--[[
  Hands claimed jobs back without touching their state: used when the API key is rejected
  (no job may be changed) and on shutdown for polls that did not finish.

  KEYS[1] schedule  zset, job id -> due time in ms

  ARGV: triples of id, leaseScore (the claimed score), dueAt

  Returns the number of leases released (a lease already taken over is left alone)
]]
local rcall = redis.call
local released = 0
for i = 1, #ARGV, 3 do
  local score = rcall("ZSCORE", KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    rcall("ZADD", KEYS[1], "XX", ARGV[i + 2], ARGV[i])
    released = released + 1
  end
end
return released
