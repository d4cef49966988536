// Package settings resolves a binary's flags from three sources with a
// fixed precedence: command-line flag > environment variable > YAML config
// file > built-in default. Every flag "foo-bar" has the environment variable
// PREFIX_FOO_BAR and the config file key "foo-bar".
package settings

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvName returns the environment variable for a flag.
func EnvName(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Parse parses args into fs, then fills every flag not given on the command
// line from the environment (prefix + flag name) and, if configFlag names a
// flag whose value is a path, from that YAML file. Unknown config keys are an
// error so that typos do not silently fall back to defaults.
func Parse(fs *flag.FlagSet, args []string, envPrefix, configFlag string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	fromEnv := map[string]bool{}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := EnvName(envPrefix, f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment %s=%q: %w", env, v, err))
			}
			fromEnv[f.Name] = true
		}
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if configFlag == "" {
		return nil
	}
	cf := fs.Lookup(configFlag)
	if cf == nil || cf.Value.String() == "" {
		return nil
	}
	path := cf.Value.String()
	values, err := readFile(path)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == configFlag {
			errs = append(errs, fmt.Errorf("config %s: unknown setting %q", path, k))
			continue
		}
		if set[k] || fromEnv[k] {
			continue
		}
		if err := fs.Set(k, values[k]); err != nil {
			errs = append(errs, fmt.Errorf("config %s: %s: %w", path, k, err))
		}
	}
	return errors.Join(errs...)
}

func readFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config file: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("config %s: not valid YAML: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case nil:
			out[k] = ""
		case map[string]any, []any:
			return nil, fmt.Errorf("config %s: %s: want a single value, got a %T", path, k, v)
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out, nil
}

// Group is a titled set of flags in a help text.
type Group struct {
	Title string
	Flags []string
}

// Usage prints a help text: a summary, then every flag with its
// environment variable and default.
func Usage(fs *flag.FlagSet, envPrefix, summary string) func() {
	return UsageGroups(fs, envPrefix, summary, nil)
}

// UsageGroups is Usage with the flags printed under the groups' titles, in
// the groups' order; flags in no group come last under "Other".
func UsageGroups(fs *flag.FlagSet, envPrefix, summary string, groups []Group) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintln(w, strings.TrimSpace(summary))
		printFlag := func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			line := "  --" + f.Name
			if name != "" {
				line += " " + name
			}
			fmt.Fprintf(w, "%s\n      %s\n      env %s", line, usage, EnvName(envPrefix, f.Name))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				fmt.Fprintf(w, ", default %s", f.DefValue)
			}
			fmt.Fprintln(w)
		}
		seen := map[string]bool{}
		for _, g := range groups {
			fmt.Fprintf(w, "\n%s:\n", g.Title)
			for _, name := range g.Flags {
				if f := fs.Lookup(name); f != nil && !seen[name] {
					seen[name] = true
					printFlag(f)
				}
			}
		}
		title := "\nSettings (flag, environment variable, default):"
		if len(groups) > 0 {
			title = "\nOther:"
		}
		first := true
		fs.VisitAll(func(f *flag.Flag) {
			if seen[f.Name] {
				return
			}
			if first {
				fmt.Fprintln(w, title)
				first = false
			}
			printFlag(f)
		})
	}
}
