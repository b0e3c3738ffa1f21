// runbox's warm start for Java's run step (see the agent's prepare_warm): started before the job
// arrives as `java RUN-OPTIONS -Xbootclasspath/a:/opt/runbox/warm/javarun.jar -cp . runbox.JavaRun FD`,
// with the JVM options of the run command, so that the job does not wait for a JVM to boot. On
// the boot class path, not the class path: the program's class path is "." as under the cold
// command, and no class of the program can shadow this one. It runs nothing before the job (a
// warm-up of string concatenation and lambdas, about 0.1 s of CPU, delayed the warm javac
// starting beside it in the same CPU quota by more than it saved). It reads the run
// command's arguments (`-c SCRIPT $0 ARGS...`, NUL-separated) from pipe FD, and when SCRIPT is
// the command this JVM stands in for, loads the class `${MAIN_FILE%.java}` names through the
// application class loader and calls its `main` on ARGS, on the launcher's own main thread. An
// uncaught exception is thrown on as the launcher would meet it, its trace without the frames
// of this stub and of reflection, so the program's stderr and exit status read as a cold run's.
// Whatever the launcher would refuse or report itself (no such class, no public static void
// main, another command) runs cold: the launcher's own words.
package runbox;

import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;

public final class JavaRun {
    private static final String PREFIX = "exec java ";
    private static final String SUFFIX = " -cp . \"${MAIN_FILE%.java}\" \"$@\"";

    private JavaRun() {}

    public static void main(String[] args) throws Throwable {
        String script = PREFIX + String.join(" ", ownJvmOptions()) + SUFFIX;
        InputStream control = new FileInputStream("/proc/self/fd/" + args[args.length - 1]);
        String[] argv = read(control);
        String name = mainClass(argv, script);
        Method main = name == null ? null : mainMethod(name);
        if (main == null) {
            cold(argv);
            return;
        }
        String[] programArgs = Arrays.copyOfRange(argv, 3, argv.length);
        // What the cold launcher would have set: the program sees its own command.
        System.setProperty("sun.java.command", command(name, programArgs));
        main.setAccessible(true); // a class that is not public runs under the launcher too
        try {
            main.invoke(null, (Object) programArgs);
        } catch (InvocationTargetException e) {
            throw trimmed(e.getCause());
        } catch (ExceptionInInitializerError e) {
            throw trimmed(e);
        }
    }

    private static String command(String name, String[] programArgs) {
        return programArgs.length == 0 ? name : name + " " + String.join(" ", programArgs);
    }

    /** The job's arguments, as the agent wrote them to the pipe before closing it. */
    private static String[] read(InputStream in) throws IOException {
        ByteArrayOutputStream read = new ByteArrayOutputStream();
        // Read by hand: FileInputStream.readAllBytes seeks, which a pipe refuses on JDK 17.
        byte[] buffer = new byte[65536];
        for (int n; (n = in.read(buffer)) > 0;) {
            read.write(buffer, 0, n);
        }
        in.close();
        byte[] payload = read.toByteArray();
        if (payload.length == 0) {
            Runtime.getRuntime().halt(0); // discarded unused
        }
        return new String(payload, StandardCharsets.UTF_8).split("\0", -1);
    }

    /** The class the cold command would run, or null when the words are not that command's. */
    private static String mainClass(String[] argv, String script) {
        if (argv.length < 3 || !argv[0].equals("-c") || !argv[1].equals(script)) {
            return null;
        }
        String file = System.getenv("MAIN_FILE");
        if (file == null) {
            return null;
        }
        String name = file.endsWith(".java") ? file.substring(0, file.length() - ".java".length()) : file;
        if (name.isEmpty() || !Character.isJavaIdentifierStart(name.charAt(0))) {
            return null;
        }
        for (int i = 1; i < name.length(); i++) {
            if (!Character.isJavaIdentifierPart(name.charAt(i))) {
                return null;
            }
        }
        return name;
    }

    /** `public static void main(String[])` of the named class, loaded but not initialized, or null. */
    private static Method mainMethod(String name) {
        try {
            Class<?> cls = Class.forName(name, false, ClassLoader.getSystemClassLoader());
            Method main = cls.getMethod("main", String[].class);
            int modifiers = main.getModifiers();
            return Modifier.isStatic(modifiers) && main.getReturnType() == void.class ? main : null;
        } catch (ClassNotFoundException | NoSuchMethodException | LinkageError | SecurityException e) {
            return null;
        }
    }

    /** Run the command as given, as the cold step would, and end with its status. */
    private static void cold(String[] argv) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of("/bin/sh"));
        command.addAll(Arrays.asList(argv));
        Process process = new ProcessBuilder(command).inheritIO().start();
        System.exit(process.waitFor());
    }

    /** ``error`` and every throwable it holds, without the frames below the program's own. */
    private static Throwable trimmed(Throwable error) {
        Set<Throwable> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        List<Throwable> todo = new ArrayList<>(List.of(error));
        while (!todo.isEmpty()) {
            Throwable t = todo.remove(todo.size() - 1);
            if (t == null || !seen.add(t)) {
                continue;
            }
            t.setStackTrace(withoutStub(t.getStackTrace()));
            todo.add(t.getCause());
            todo.addAll(Arrays.asList(t.getSuppressed()));
        }
        return error;
    }

    /** A main thread's trace cut where this stub called the program: the stub and reflection go. */
    private static StackTraceElement[] withoutStub(StackTraceElement[] frames) {
        int end = frames.length;
        while (end > 0 && !frames[end - 1].getClassName().equals(JavaRun.class.getName())) {
            end--;
        }
        if (end == 0) {
            return frames; // not thrown through this stub (a trace cut at the JVM's depth, say)
        }
        end--;
        while (end > 0 && machinery(frames[end - 1].getClassName())) {
            end--;
        }
        return Arrays.copyOf(frames, end);
    }

    private static boolean machinery(String className) {
        return className.startsWith("jdk.internal.") || className.startsWith("java.lang.invoke.")
            || className.startsWith("java.lang.reflect.") || className.equals("java.lang.Class");
    }

    /** The options this JVM was started with (from its command line), but the boot class path's. */
    private static List<String> ownJvmOptions() throws IOException {
        byte[] raw = Files.readAllBytes(Paths.get("/proc/self/cmdline"));
        List<String> all = Arrays.asList(new String(raw, StandardCharsets.UTF_8).split("\0"));
        List<String> options = new ArrayList<>();
        for (String option : all.subList(1, all.size())) {
            if (option.equals("-cp")) {
                break;
            }
            if (!option.startsWith("-Xbootclasspath/a:")) {
                options.add(option);
            }
        }
        return options;
    }
}
