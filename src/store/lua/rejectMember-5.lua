--[[
  Moves a pending member that is not a job id to the rejected set and emits its `rejected`
  event, atomically, so a member is never dropped without a trace nor reported twice.

  KEYS[1] pending    set
  KEYS[2] rejected   set
  KEYS[3] rejectSeq  hash, member -> last event sequence
  KEYS[4] events     stream
  KEYS[5] alerts     stream

  ARGV[1] member
  ARGV[2] expected last sequence (the event below carries expected + 1)
  ARGV[3] stream MAXLEN (approximate)
  ARGV[4] data, ARGV[5] eventId, ARGV[6] type, ARGV[7] time

  Returns 1 moved, 2 no longer pending, { 3, current sequence } on a sequence conflict
]]
local rcall = redis.call
--- @include "expectKeyType"
expect(KEYS[1], "set")
expect(KEYS[2], "set")
expect(KEYS[3], "hash")
expect(KEYS[4], "stream")
expect(KEYS[5], "stream")

local member, expected = ARGV[1], tonumber(ARGV[2])
if rcall("SISMEMBER", KEYS[1], member) == 0 then
  return 2
end
local current = tonumber(rcall("HGET", KEYS[3], member) or "0")
if current ~= expected then
  return { 3, current }
end
rcall("SMOVE", KEYS[1], KEYS[2], member)
rcall("HSET", KEYS[3], member, expected + 1)
local fields = { "MAXLEN", "~", ARGV[3], "*", "data", ARGV[4], "id", ARGV[5],
  "type", ARGV[6], "subject", member, "time", ARGV[7] }
rcall("XADD", KEYS[4], unpack(fields))
rcall("XADD", KEYS[5], unpack(fields))
return 1
