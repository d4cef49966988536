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

// readFile reads a flat YAML mapping of setting names to values. Each value
// is taken as the text written in the file, as a flag or an environment
// variable would give it: decoding into Go values first would let YAML's
// type guessing rewrite it (group: 0123 would become 83, 0x10 16, a date a
// time).
func readFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config %s: not valid YAML: %w", path, err)
	}
	out := map[string]string{}
	if len(doc.Content) == 0 {
		return out, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config %s: want a mapping of setting names to values (line %d)", path, root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("config %s: line %d: a setting's name must be a plain word", path, k.Line)
		}
		if _, dup := out[k.Value]; dup {
			return nil, fmt.Errorf("config %s: line %d: %s is set twice", path, k.Line, k.Value)
		}
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		switch {
		case v.Kind != yaml.ScalarNode:
			return nil, fmt.Errorf("config %s: line %d: %s: want a single value, got a list or mapping", path, v.Line, k.Value)
		case v.ShortTag() == "!!null":
			out[k.Value] = ""
		default:
			out[k.Value] = v.Value
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
