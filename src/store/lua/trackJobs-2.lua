--[[
  Adds job ids to the pending set for a producer (the library's track(), the CLI's track) and
  leaves the intake hint for each id that was new, so the daemon schedules it without diffing
  the pending set. Both happen in one script: a hint never names an id that is not pending
  because of this call, and an id added here always has its hint. The caller validated the ids.

  KEYS[1] pending  set, the producers' input
  KEYS[2] hints    list, read by intake before any diff

  ARGV    the ids

  Returns one 1/0 per id: 1 added now, 0 already pending
]]
local rcall = redis.call
local pending, hints = KEYS[1], KEYS[2]
local result = {}
local fresh = {}
for i, id in ipairs(ARGV) do
  result[i] = rcall("SADD", pending, id)
  if result[i] == 1 then
    fresh[#fresh + 1] = id
  end
end
if #fresh > 0 then
  rcall("RPUSH", hints, unpack(fresh))
end
return result
