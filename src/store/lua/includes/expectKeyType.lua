--[[
  expect(key, kind): stops the script with a WRONGTYPE error when `key` exists with another
  type than `kind` ("set", "zset", "hash", "stream"...).

  Redis does not undo a script's earlier writes when a later command fails, so a key of the
  wrong type (a prefix collision, an operator's mistake) must stop the script before any
  write; otherwise a version could move on without its events. Call it for every key first.
  Needs `rcall` (redis.call) defined before the include.
]]
local function expect(key, kind)
  local t = rcall("TYPE", key)["ok"]
  if t ~= "none" and t ~= kind then
    error("WRONGTYPE key " .. key .. " is a " .. t .. ", expected a " .. kind)
  end
end
