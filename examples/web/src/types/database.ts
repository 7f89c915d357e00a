export type Json = string | number | boolean | null | { [key: string]: Json | undefined } | Json[];

export type Database = {
  public: {
    Tables: {
      llm_calls: {
        Row: {
          client_disconnected: boolean;
          completion_tokens: number | null;
          cost: number | null;
          cost_final: boolean;
          created_at: string;
          error_code: string | null;
          finished_at: string | null;
          id: string;
          litellm_call_id: string | null;
          model: string;
          prompt_tokens: number | null;
          request_id: string | null;
          status: string;
          stream: boolean;
          total_tokens: number | null;
          user_id: string;
        };
        ComputedFields: never;
        Insert: {
          client_disconnected?: boolean;
          completion_tokens?: number | null;
          cost?: number | null;
          cost_final?: boolean;
          created_at?: string;
          error_code?: string | null;
          finished_at?: string | null;
          id?: string;
          litellm_call_id?: string | null;
          model: string;
          prompt_tokens?: number | null;
          request_id?: string | null;
          status?: string;
          stream: boolean;
          total_tokens?: number | null;
          user_id: string;
        };
        Update: {
          client_disconnected?: boolean;
          completion_tokens?: number | null;
          cost?: number | null;
          cost_final?: boolean;
          created_at?: string;
          error_code?: string | null;
          finished_at?: string | null;
          id?: string;
          litellm_call_id?: string | null;
          model?: string;
          prompt_tokens?: number | null;
          request_id?: string | null;
          status?: string;
          stream?: boolean;
          total_tokens?: number | null;
          user_id?: string;
        };
        Relationships: [
          {
            foreignKeyName: "llm_calls_user_id_fkey";
            columns: ["user_id"];
            isOneToOne: false;
            referencedRelation: "user_profiles";
            referencedColumns: ["id"];
          },
        ];
      };
      message_feedback: {
        Row: {
          comment: string | null;
          created_at: string;
          letta_attempts: number;
          letta_retry_at: string;
          letta_sent_at: string | null;
          letta_step_id: string | null;
          message_id: string;
          rating: string;
          updated_at: string;
          user_id: string;
        };
        ComputedFields: never;
        Insert: {
          comment?: string | null;
          created_at?: string;
          letta_attempts?: number;
          letta_retry_at?: string;
          letta_sent_at?: string | null;
          letta_step_id?: string | null;
          message_id: string;
          rating: string;
          updated_at?: string;
          user_id: string;
        };
        Update: {
          comment?: string | null;
          created_at?: string;
          letta_attempts?: number;
          letta_retry_at?: string;
          letta_sent_at?: string | null;
          letta_step_id?: string | null;
          message_id?: string;
          rating?: string;
          updated_at?: string;
          user_id?: string;
        };
        Relationships: [
          {
            foreignKeyName: "message_feedback_message_id_fkey";
            columns: ["message_id"];
            isOneToOne: true;
            referencedRelation: "messages";
            referencedColumns: ["id"];
          },
          {
            foreignKeyName: "message_feedback_user_id_fkey";
            columns: ["user_id"];
            isOneToOne: false;
            referencedRelation: "user_profiles";
            referencedColumns: ["id"];
          },
        ];
      };
      messages: {
        Row: {
          completion_tokens: number | null;
          content: string;
          cost: number | null;
          cost_final: boolean | null;
          created_at: string;
          error_code: string | null;
          id: string;
          letta_message_id: string | null;
          letta_run_id: string | null;
          model: string | null;
          prompt_tokens: number | null;
          role: string;
          search_tsv: unknown;
          status: string;
          thread_id: string;
          tokens_used: number | null;
          turn_id: string;
          user_id: string;
        };
        ComputedFields: never;
        Insert: {
          completion_tokens?: number | null;
          content: string;
          cost?: number | null;
          cost_final?: boolean | null;
          created_at?: string;
          error_code?: string | null;
          id?: string;
          letta_message_id?: string | null;
          letta_run_id?: string | null;
          model?: string | null;
          prompt_tokens?: number | null;
          role: string;
          search_tsv?: never;
          status?: string;
          thread_id: string;
          tokens_used?: number | null;
          turn_id: string;
          user_id: string;
        };
        Update: {
          completion_tokens?: number | null;
          content?: string;
          cost?: number | null;
          cost_final?: boolean | null;
          created_at?: string;
          error_code?: string | null;
          id?: string;
          letta_message_id?: string | null;
          letta_run_id?: string | null;
          model?: string | null;
          prompt_tokens?: number | null;
          role?: string;
          search_tsv?: never;
          status?: string;
          thread_id?: string;
          tokens_used?: number | null;
          turn_id?: string;
          user_id?: string;
        };
        Relationships: [
          {
            foreignKeyName: "messages_thread_id_fkey";
            columns: ["thread_id"];
            isOneToOne: false;
            referencedRelation: "threads";
            referencedColumns: ["id"];
          },
          {
            foreignKeyName: "messages_user_id_fkey";
            columns: ["user_id"];
            isOneToOne: false;
            referencedRelation: "user_profiles";
            referencedColumns: ["id"];
          },
        ];
      };
      threads: {
        Row: {
          branch_context: string | null;
          compiled_memory_version: number | null;
          created_at: string;
          forked_from_message_id: string | null;
          forked_from_thread_id: string | null;
          id: string;
          is_default: boolean;
          last_message_at: string;
          letta_agent_id: string | null;
          letta_conversation_id: string | null;
          title: string | null;
          title_source: string | null;
          user_id: string;
        };
        ComputedFields: never;
        Insert: {
          branch_context?: string | null;
          compiled_memory_version?: number | null;
          created_at?: string;
          forked_from_message_id?: string | null;
          forked_from_thread_id?: string | null;
          id?: string;
          is_default?: boolean;
          last_message_at?: string;
          letta_agent_id?: string | null;
          letta_conversation_id?: string | null;
          title?: string | null;
          title_source?: string | null;
          user_id: string;
        };
        Update: {
          branch_context?: string | null;
          compiled_memory_version?: number | null;
          created_at?: string;
          forked_from_message_id?: string | null;
          forked_from_thread_id?: string | null;
          id?: string;
          is_default?: boolean;
          last_message_at?: string;
          letta_agent_id?: string | null;
          letta_conversation_id?: string | null;
          title?: string | null;
          title_source?: string | null;
          user_id?: string;
        };
        Relationships: [
          {
            foreignKeyName: "threads_forked_from_thread_id_fkey";
            columns: ["forked_from_thread_id"];
            isOneToOne: false;
            referencedRelation: "threads";
            referencedColumns: ["id"];
          },
          {
            foreignKeyName: "threads_user_id_fkey";
            columns: ["user_id"];
            isOneToOne: false;
            referencedRelation: "user_profiles";
            referencedColumns: ["id"];
          },
        ];
      };
      usage_metrics: {
        Row: {
          completion_tokens: number;
          date: string;
          id: string;
          prompt_tokens: number;
          total_cost: number;
          total_messages: number;
          total_tokens: number;
          updated_at: string;
          user_id: string;
        };
        ComputedFields: never;
        Insert: {
          completion_tokens?: number;
          date?: string;
          id?: string;
          prompt_tokens?: number;
          total_cost?: number;
          total_messages?: number;
          total_tokens?: number;
          updated_at?: string;
          user_id: string;
        };
        Update: {
          completion_tokens?: number;
          date?: string;
          id?: string;
          prompt_tokens?: number;
          total_cost?: number;
          total_messages?: number;
          total_tokens?: number;
          updated_at?: string;
          user_id?: string;
        };
        Relationships: [
          {
            foreignKeyName: "usage_metrics_user_id_fkey";
            columns: ["user_id"];
            isOneToOne: false;
            referencedRelation: "user_profiles";
            referencedColumns: ["id"];
          },
        ];
      };
      user_profiles: {
        Row: {
          agent_status: string;
          created_at: string;
          display_name: string | null;
          email: string | null;
          id: string;
          last_active_at: string | null;
          letta_agent_id: string | null;
          letta_provider_id: string | null;
          litellm_user_id: string | null;
          memory_version: number;
          model: string | null;
          next_provisioning_at: string;
          provisioning_attempts: number;
          provisioning_claim: string | null;
          provisioning_claimed_until: string | null;
          updated_at: string;
        };
        ComputedFields: never;
        Insert: {
          agent_status?: string;
          created_at?: string;
          display_name?: string | null;
          email?: string | null;
          id: string;
          last_active_at?: string | null;
          letta_agent_id?: string | null;
          letta_provider_id?: string | null;
          litellm_user_id?: string | null;
          memory_version?: number;
          model?: string | null;
          next_provisioning_at?: string;
          provisioning_attempts?: number;
          provisioning_claim?: string | null;
          provisioning_claimed_until?: string | null;
          updated_at?: string;
        };
        Update: {
          agent_status?: string;
          created_at?: string;
          display_name?: string | null;
          email?: string | null;
          id?: string;
          last_active_at?: string | null;
          letta_agent_id?: string | null;
          letta_provider_id?: string | null;
          litellm_user_id?: string | null;
          memory_version?: number;
          model?: string | null;
          next_provisioning_at?: string;
          provisioning_attempts?: number;
          provisioning_claim?: string | null;
          provisioning_claimed_until?: string | null;
          updated_at?: string;
        };
        Relationships: [];
      };
    };
    Views: {
      [_ in never]: never;
    };
    Functions: {
      search_messages: {
        Args: { before_id?: string; before_rank?: number; in_thread?: string; query: string; result_limit?: number };
        Returns: {
          created_at: string;
          id: string;
          rank: number;
          role: string;
          snippet: string;
          thread_id: string;
          thread_title: string;
        }[];
      };
    };
    Enums: {
      [_ in never]: never;
    };
    CompositeTypes: {
      [_ in never]: never;
    };
  };
};

type DatabaseWithoutInternals = Omit<Database, "__InternalSupabase">;

type DefaultSchema = DatabaseWithoutInternals[Extract<keyof Database, "public">];

export type Tables<
  DefaultSchemaTableNameOrOptions extends
    keyof (DefaultSchema["Tables"] & DefaultSchema["Views"]) | { schema: keyof DatabaseWithoutInternals },
  TableName extends (DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals;
  }
    ? keyof (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
        DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])
    : never) = never,
> = DefaultSchemaTableNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
  ? (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
      DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])[TableName] extends {
      Row: infer R;
    }
    ? R
    : never
  : DefaultSchemaTableNameOrOptions extends keyof (DefaultSchema["Tables"] & DefaultSchema["Views"])
    ? (DefaultSchema["Tables"] & DefaultSchema["Views"])[DefaultSchemaTableNameOrOptions] extends {
        Row: infer R;
      }
      ? R
      : never
    : never;

export type TablesInsert<
  DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"] | { schema: keyof DatabaseWithoutInternals },
  TableName extends (DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals;
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"]
    : never) = never,
> = DefaultSchemaTableNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
  ? DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"][TableName] extends {
      Insert: infer I;
    }
    ? I
    : never
  : DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][DefaultSchemaTableNameOrOptions] extends {
        Insert: infer I;
      }
      ? I
      : never
    : never;

export type TablesUpdate<
  DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"] | { schema: keyof DatabaseWithoutInternals },
  TableName extends (DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals;
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"]
    : never) = never,
> = DefaultSchemaTableNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
  ? DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"][TableName] extends {
      Update: infer U;
    }
    ? U
    : never
  : DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][DefaultSchemaTableNameOrOptions] extends {
        Update: infer U;
      }
      ? U
      : never
    : never;

export type Enums<
  DefaultSchemaEnumNameOrOptions extends keyof DefaultSchema["Enums"] | { schema: keyof DatabaseWithoutInternals },
  EnumName extends (DefaultSchemaEnumNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals;
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"]
    : never) = never,
> = DefaultSchemaEnumNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
  ? DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"][EnumName]
  : DefaultSchemaEnumNameOrOptions extends keyof DefaultSchema["Enums"]
    ? DefaultSchema["Enums"][DefaultSchemaEnumNameOrOptions]
    : never;

export type CompositeTypes<
  PublicCompositeTypeNameOrOptions extends
    keyof DefaultSchema["CompositeTypes"] | { schema: keyof DatabaseWithoutInternals },
  CompositeTypeName extends (PublicCompositeTypeNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals;
  }
    ? keyof DatabaseWithoutInternals[PublicCompositeTypeNameOrOptions["schema"]]["CompositeTypes"]
    : never) = never,
> = PublicCompositeTypeNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
  ? DatabaseWithoutInternals[PublicCompositeTypeNameOrOptions["schema"]]["CompositeTypes"][CompositeTypeName]
  : PublicCompositeTypeNameOrOptions extends keyof DefaultSchema["CompositeTypes"]
    ? DefaultSchema["CompositeTypes"][PublicCompositeTypeNameOrOptions]
    : never;

export const Constants = {
  public: {
    Enums: {},
  },
} as const;
