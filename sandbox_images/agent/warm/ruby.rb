# runbox's warm start for `ruby main.rb ARGS` (the agent's prepare_warm starts it as
# `ruby /opt/runbox/warm/ruby.rb FD` before the job arrives). It reads the program's name and
# arguments from pipe FD, closes it, and evaluates the file at the top level as ruby does its
# main script: the same ARGV, $0, __FILE__, DATA after __END__, and uncaught exceptions
# reported without this file's frames. Everything here is local to a lambda, so the program's
# top level holds none of it.
-> do
  control = IO.for_fd(Integer(ARGV[0]), "rb")
  data = control.read
  control.close
  exit!(0) if data.empty?
  file, *args = data.split("\0", -1).map { |arg| arg.force_encoding(Encoding.find("locale")) }
  ARGV.replace(args)
  $0 = file
  raw = File.binread(file)
  if (ending = /^__END__\r?(?:\n|\z)/.match(raw))
    rest = File.open(file)
    rest.seek(ending.pre_match.bytesize + ending[0].bytesize)
    Object.const_set(:DATA, rest)
  end
  begin
    TOPLEVEL_BINDING.eval(raw.force_encoding(Encoding::UTF_8), file, 1)
  rescue Exception => e # everything, SystemExit and signals too: raised again as they were
    cause = e
    while cause
      cause.set_backtrace(cause.backtrace.reject { |frame| frame.start_with?("#{__FILE__}:") }) if cause.backtrace
      cause = cause.cause
    end
    raise e
  end
end.call
